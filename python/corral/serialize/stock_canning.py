"""Functions for stock ipyparallel engines, in ipyparallel's own "canned" form.

corral sends a function defined in a notebook (``__main__``) by value with cloudpickle, and
corral engines rebind it to their user namespace. Stock engines do not: they run it with
the globals cloudpickle rebuilt, so names pushed or defined on the engine stay invisible to
it, and ``global x`` writes nowhere a later task looks. What they do rebind is ipyparallel's
``CannedFunction`` (its code object, canned defaults and closure cells, its module name):
uncanned with the user namespace as globals when the module is ``__main__``. So for stock
engines the client writes that form, at the places a stock engine uncans: the object
itself, the items of a small top-level list, tuple or set, and the values of a small
top-level dict (see ipyparallel's ``serialize_object``/``deserialize_object``).

Only functions whose module starts with ``__`` (what ``@interactive`` and a notebook give)
are canned: for the others the engine would use their module's globals, which is what
cloudpickle sends too. A ``dependent`` (``@require``, ``@depend``) goes as ipyparallel's
canned object with its ``f`` and ``df`` canned, so the guarded function is rebound too.

The form is written without importing ipyparallel (see ``canned_writer``): a code object
pickles as a call of ``ipyparallel.serialize.codeutil.code_ctor`` with the arguments of
``types.CodeType`` in its own order, which a stock engine (and corral's ``Unpickler``)
answers. Client and engines must run the same Python minor version, as ipyparallel needs.
"""

from __future__ import annotations

import copy
import inspect
import io
import types
from typing import Any

import cloudpickle

from corral.serialize.canned_writer import CannedAs, ClassByName
from corral.serialize.canning import CODEUTIL_MODULE, MAX_ITEMS

__all__ = ["StockPickler", "can_top_level", "stock_dumps", "wants_canning"]

_SEQUENCES = (list, tuple, set)


def _code_attributes() -> tuple[str, ...]:
    """The ``co_*`` attributes in the order ``types.CodeType(...)`` takes its arguments."""
    renamed = {"codestring": "co_code", "constants": "co_consts"}
    params = inspect.signature(types.CodeType).parameters
    return tuple(renamed.get(name, f"co_{name}") for name in params)


class _FunctionByName(ClassByName):
    """A function of a module named without importing it here; pickle wants the first
    item of a reduce tuple to be callable, and unpickling calls the real function."""

    def __call__(self, *args):
        raise TypeError(f"{self.module}.{self.name} is only called where it is unpickled")


_CODE_ATTRIBUTES = _code_attributes()
_CODE_CTOR = _FunctionByName(CODEUTIL_MODULE, "code_ctor")


class StockPickler(cloudpickle.Pickler):
    """cloudpickle, except that code objects are written as ipyparallel's ``code_ctor``
    calls (what a stock engine's plain ``pickle.loads`` rebuilds a canned function from)."""

    def reducer_override(self, obj):
        if type(obj) is types.CodeType:
            return _CODE_CTOR, tuple(getattr(obj, name) for name in _CODE_ATTRIBUTES)
        return super().reducer_override(obj)


def stock_dumps(obj, protocol=None, buffer_callback=None) -> bytes:
    """``pickle.dumps`` with ``StockPickler``."""
    out = io.BytesIO()
    StockPickler(out, protocol=protocol, buffer_callback=buffer_callback).dump(obj)
    return out.getvalue()


def _runs_in_user_namespace(f) -> bool:
    """A function a stock engine gives the user namespace as globals once canned."""
    return type(f) is types.FunctionType and (f.__module__ or "__main__").startswith("__")


def _is_dependent(obj) -> bool:
    from corral.dependency import dependent

    return isinstance(obj, dependent)


def _cannable(obj) -> bool:
    return _runs_in_user_namespace(obj) or _is_dependent(obj)


def wants_canning(obj) -> bool:
    """Whether ``can_top_level(obj)`` would change anything (so the caller need not find
    out what the engines are when it would not)."""
    if type(obj) in _SEQUENCES and len(obj) < MAX_ITEMS:
        return any(_cannable(item) for item in obj)
    if type(obj) is dict and len(obj) < MAX_ITEMS:
        return any(_cannable(value) for value in obj.values())
    return _cannable(obj)


def can_top_level(obj):
    """``obj`` with the functions a stock engine rebinds in canned form, where it looks."""
    if type(obj) in _SEQUENCES and len(obj) < MAX_ITEMS:
        return type(obj)(can(item) for item in obj)
    if type(obj) is dict and len(obj) < MAX_ITEMS:
        return {key: can(value) for key, value in obj.items()}
    return can(obj)


def can(obj) -> Any:
    """One object in canned form if it is a function to rebind or a ``dependent``."""
    if _runs_in_user_namespace(obj):
        return _can_function(obj)
    if _is_dependent(obj):
        return _can_dependent(obj)
    return obj


def _can_function(f: types.FunctionType):
    try:
        closure = tuple(CannedAs("CannedCell", {"cell_contents": can(cell.cell_contents)})
                        for cell in f.__closure__ or ())
    except ValueError:  # an empty cell (a name not yet assigned): cloudpickle sends it
        return f
    state = {
        "code": f.__code__,
        "defaults": [can(d) for d in f.__defaults__] if f.__defaults__ else None,
        "kwdefaults": ({k: can(v) for k, v in f.__kwdefaults__.items()}
                       if f.__kwdefaults__ else None),
        "annotations": ({k: can(v) for k, v in f.__annotations__.items()}
                        if f.__annotations__ else None),
        "closure": closure or None,
        "module": f.__module__ or "__main__",
        "__name__": f.__name__,
        "buffers": [],
    }
    return CannedAs("CannedFunction", state)


def _can_dependent(dep):
    """ipyparallel's ``CannedObject(dep, keys=("f", "df"))`` without its hook (the hook
    calls ipyparallel's own ``check_dependency``; corral's ``dependent`` checks when
    called)."""
    canned = copy.copy(dep)
    canned.f, canned.df = can(dep.f), can(dep.df)
    return CannedAs("CannedObject", {"keys": ["f", "df"], "obj": canned, "hook": None,
                                     "buffers": []})
