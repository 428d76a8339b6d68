"""Pickles of functions sent again and again, kept so cloudpickle does not rebuild them.

`view.apply_async(f)` in a loop pickles the same `f` every call. cloudpickle rebuilds a
notebook function from scratch each time (its code, globals and attributes, in Python):
about 12 µs of the client's 35-40 µs of CPU per `apply_async`. This cache hands back the
previous pickle instead, but only while everything cloudpickle reads from the function is
provably the same:

* the same code, defaults, keyword defaults, annotations (all of them safe objects, as
  below), name, qualname, module and doc, with no closure and no function attributes;
* every name its code (and nested code) uses bound, in its globals, to the very same
  object as before, or still unbound. Such an object must be one whose pickle cannot change
  without it being replaced: None, numbers, strings, bytes, tuples and frozensets of them,
  and modules, classes and functions that cloudpickle pickles by reference (importable by
  name, not registered by value), or the function itself (recursion);
* when a module is among them, no module imported since (cloudpickle also sends the
  submodules already imported, so an import could change the pickle).

Any other function (a closure, a global list, a helper defined in the notebook) is
pickled afresh every call, as before.
"""

from __future__ import annotations

import sys
import types
import weakref
from typing import Any, Callable

import cloudpickle

_MISSING = object()
_SCALARS = (type(None), bool, int, float, complex, str, bytes)


class _Entry:
    """A function's last pickle and what it was made from; `pickle` None: the function
    could not be vouched for, so it is not looked at again while its code is the same."""

    __slots__ = ("fingerprint", "pickle", "globals_used", "modules_seen")

    def __init__(self, fingerprint, pickle, globals_used, modules_seen):
        self.fingerprint = fingerprint
        self.pickle = pickle
        #: ((name, object or _MISSING), ...) as the code saw its globals.
        self.globals_used = globals_used
        #: len(sys.modules) when a module was among the globals, else None.
        self.modules_seen = modules_seen


_entries: "weakref.WeakKeyDictionary[types.FunctionType, _Entry]" = weakref.WeakKeyDictionary()
#: How many pickles came from the cache (tests read it).
hits = 0


def dumps(dumps: Callable, f: Any) -> bytes | None:
    """`dumps(f, protocol=5)` (cloudpickle's), from the cache when `f` is unchanged since
    its last pickle; None when `f` is not a function this cache can vouch for."""
    global hits
    if type(f) is not types.FunctionType or dumps is not cloudpickle.dumps:
        return None
    entry = _entries.get(f)
    if entry is not None:
        if entry.pickle is None:
            if f.__code__ is entry.fingerprint[0]:
                return None
        elif _unchanged(f, entry):
            hits += 1
            return entry.pickle
    globals_used = _globals_used(f)
    if globals_used is None or not plain_with_safe_state(f):
        _entries[f] = _Entry((f.__code__,), None, (), None)
        return None
    pickle = dumps(f, protocol=5)
    has_module = any(isinstance(o, types.ModuleType) for _, o in globals_used)
    _entries[f] = _Entry(_fingerprint(f), pickle, globals_used,
                         len(sys.modules) if has_module else None)
    return pickle


def plain_with_safe_state(f) -> bool:
    """No closure, no attributes, and defaults, keyword defaults and annotations that are
    all safe objects (see `safe`): what a kept pickle, or a kept unpickled function,
    needs besides its globals."""
    return (f.__closure__ is None and not f.__dict__ and _all_safe(f.__defaults__ or ())
            and _all_safe((f.__kwdefaults__ or {}).values())
            and _all_safe(f.__annotations__.values()))


def _fingerprint(f) -> tuple:
    return (f.__code__, f.__defaults__, dict(f.__kwdefaults__ or {}),
            dict(f.__annotations__), f.__name__, f.__qualname__, f.__module__, f.__doc__)


def _unchanged(f, entry: _Entry) -> bool:
    old = entry.fingerprint
    if (f.__code__ is not old[0] or f.__defaults__ is not old[1] or f.__closure__ is not None
            or f.__dict__ or f.__name__ is not old[4] or f.__qualname__ is not old[5]
            or f.__module__ is not old[6] or f.__doc__ is not old[7]
            or (f.__kwdefaults__ or {}) != old[2] or f.__annotations__ != old[3]):
        return False
    if entry.modules_seen is not None and len(sys.modules) != entry.modules_seen:
        return False
    g = f.__globals__
    return all(g.get(name, _MISSING) is obj for name, obj in entry.globals_used)


def _globals_used(f) -> tuple | None:
    """((name, object or _MISSING), ...) for every name f's code may read from its globals
    (co_names is a superset: it holds attribute names too, which only makes the check
    stricter), with the module's identity names; None if one is not safe to assume
    unchanged while it is the same object."""
    names = {"__name__", "__package__", "__path__", "__file__"}
    _code_names(f.__code__, names)
    g = f.__globals__
    used = []
    for name in names:
        obj = g.get(name, _MISSING)
        if obj is not _MISSING and obj is not f and not safe(obj):
            return None
        used.append((name, obj))
    return tuple(used)


def _code_names(code: types.CodeType, into: set) -> None:
    into.update(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_names(const, into)


def _all_safe(objs) -> bool:
    return all(safe(o) for o in objs)


def safe(obj: Any, depth: int = 0) -> bool:
    """Whether `obj`'s pickle can change only if `obj` is replaced."""
    if isinstance(obj, _SCALARS):
        return True
    if type(obj) in (tuple, frozenset):
        return depth < 4 and all(safe(o, depth + 1) for o in obj)
    if isinstance(obj, types.ModuleType):
        return _by_reference_module(obj.__name__) and sys.modules.get(obj.__name__) is obj
    if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
        return _pickled_by_reference(obj)
    return False


def _by_reference_module(name: str) -> bool:
    if name == "__main__" or name is None:
        return False
    registry = cloudpickle.list_registry_pickle_by_value()
    return not any(name == m or name.startswith(m + ".") for m in registry)


def _pickled_by_reference(obj) -> bool:
    """A class or function cloudpickle sends as `module.qualname` (importable, found
    under that name), not by value."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module_name, str) or not isinstance(qualname, str):
        return False
    if not _by_reference_module(module_name) or "<locals>" in qualname:
        return False
    found = sys.modules.get(module_name)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found is obj

