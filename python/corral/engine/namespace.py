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

__all__ = ["bind_sent_functions"]


def _sent_by_value(f) -> bool:
    if type(f) is not types.FunctionType:
        return False
    module = sys.modules.get(f.__module__ or "")
    return module is None or f.__globals__ is not module.__dict__


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
