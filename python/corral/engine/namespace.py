"""Functions sent by value run in the engine's user namespace, as in ipyparallel.

cloudpickle rebuilds a function defined in a notebook (or a module registered by value)
with a fresh globals dict holding only the globals it referenced on the client. So that
names pushed, scattered or defined by ``execute`` on the engine are visible to it, and
``global x`` in it writes to that namespace, such a function is re-created with the user
namespace as its globals. The names it brought along fill only the gaps: a name that
already exists on the engine keeps its engine value, as ipyparallel's canning gives.
"""

from __future__ import annotations

import sys
import types

from corral.dependency import dependent
from corral.serialize.function_cache import plain_with_safe_state, safe

__all__ = ["LastSentFunction", "bind_sent_functions"]


def _sent_by_value(f) -> bool:
    if type(f) is not types.FunctionType:
        return False
    module = sys.modules.get(f.__module__ or "")
    return module is None or f.__globals__ is not module.__dict__


class LastSentFunction:
    """The function of the last `apply_request`, reused when the next request carries the
    very same pickle (`apply` in a loop) instead of being unpickled again.

    Only while sent functions run in the user namespace (the default): a function sent by
    value is then a template, re-created with that namespace before each call
    (`_rebind`), so user code never holds or changes it. And only for one whose globals,
    defaults and annotations are all safe objects (`function_cache.safe`), so that copying
    its globals into the namespace gives what a fresh unpickle would."""

    def __init__(self):
        self._pickle: bytes | None = None
        self._function = None

    def get(self, frame) -> types.FunctionType | None:
        """The function last kept for this exact pickle, or None."""
        if self._pickle is not None and frame == self._pickle:
            return self._function
        return None

    def keep(self, frame, f) -> None:
        """Keeps `f`, just unpickled from `frame` alone, if it is safe to reuse."""
        if (_sent_by_value(f) and plain_with_safe_state(f)
                and all(safe(v) or v is f for k, v in f.__globals__.items()
                        if not (k.startswith("__") and k.endswith("__")))):
            self._pickle, self._function = bytes(frame), f
        else:
            self._pickle, self._function = None, None


def _rebind(f: types.FunctionType, user_ns: dict) -> types.FunctionType:
    if f.__globals__ is user_ns:
        return f
    for name, value in f.__globals__.items():
        if not (name.startswith("__") and name.endswith("__")):
            user_ns.setdefault(name, value)
    g = types.FunctionType(f.__code__, user_ns, f.__name__, f.__defaults__, f.__closure__)
    g.__kwdefaults__ = f.__kwdefaults__
    g.__qualname__ = f.__qualname__
    g.__doc__ = f.__doc__
    g.__module__ = f.__module__
    g.__dict__.update(f.__dict__)
    return g


def _bind(f, user_ns: dict):
    if _sent_by_value(f):
        return _rebind(f, user_ns)
    if isinstance(f, dependent):  # @depend / @require: the function and its check
        f.f, f.df = _bind(f.f, user_ns), _bind(f.df, user_ns)
    return f


def bind_sent_functions(f, args: tuple, kwargs: dict, user_ns: dict) -> tuple:
    """``f`` and the top-level ``args`` and ``kwargs`` (``map`` passes the user's function
    as an argument, ``push`` its names as keywords), with every function that came by value
    bound to ``user_ns``."""
    return (_bind(f, user_ns), tuple(_bind(a, user_ns) for a in args),
            {k: _bind(v, user_ns) for k, v in kwargs.items()})
