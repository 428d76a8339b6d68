"""Small functions that views send in ``apply_request``s to run ON the engines.

They travel by reference (the engines import corral too), so a push or a pull costs one
short pickle plus the data. They reach the user namespace as ``sys.modules["__main__"]``,
which the engine's executor installs as the namespace that ``execute`` and applied
functions share.
"""

from __future__ import annotations

import sys

__all__ = ["map_chunk", "pull", "push"]


def _user_ns() -> dict:
    return sys.modules["__main__"].__dict__


def push(**ns) -> None:
    """Binds each keyword as a name in the user namespace (``view.push(dict)``); a dotted
    name (``"a.b"``) is assigned as the statement ``a.b = value`` would, as ipyparallel does."""
    user_ns = _user_ns()
    for name, value in ns.items():
        if "." not in name:
            user_ns[name] = value
            continue
        owner, _, attr = name.rpartition(".")
        setattr(eval(owner, user_ns), attr, value)


def pull(names):
    """The value of one name, or a list of values for a list of names (``view.pull``).
    Each name is evaluated in the user namespace, as ipyparallel does, so a missing one
    raises ``NameError`` and dotted names (``"a.shape"``) work."""
    user_ns = _user_ns()
    if isinstance(names, str):
        return eval(names, user_ns)
    return [eval(n, user_ns) for n in names]


def map_chunk(f, *chunks) -> list:
    """``list(map(f, *chunks))``: one task of a parallel ``map``."""
    return list(map(f, *chunks))
