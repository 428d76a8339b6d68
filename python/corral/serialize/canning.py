"""Reading ipyparallel's "canned" payloads without importing ipyparallel.

Stock ipyparallel pickles functions as `ipyparallel.serialize.canning.CannedFunction`
(raw code objects rebuilt through `ipyparallel.serialize.codeutil.code_ctor`) and large
arrays as `CannedArray` whose buffers travel as extra frames. `Unpickler` maps those names
onto the look-alike classes below, which rebuild the real objects.
"""

from __future__ import annotations

import io
import pickle
import sys
import types
from typing import Any

CANNING_MODULE = "ipyparallel.serialize.canning"
CODEUTIL_MODULE = "ipyparallel.serialize.codeutil"

#: ipyparallel only looks inside containers this small (its MAX_ITEMS).
MAX_ITEMS = 64


def code_ctor(*args):
    return types.CodeType(*args)


class CannedObject:
    """Base of the stand-ins; instances are filled from ipyparallel's pickled state."""

    buffers: list = []

    def get_object(self, g=None):
        g = {} if g is None else g
        obj = self.obj
        for key in getattr(self, "keys", []):
            setattr(obj, key, uncan(getattr(obj, key), g))
        hook = getattr(self, "hook", None)
        if hook:
            uncan(hook, g)(obj, g)
        return obj


class Reference(CannedObject):
    def get_object(self, g=None):
        return eval(self.name, {} if g is None else g)


class CannedCell(CannedObject):
    def get_object(self, g=None):
        return types.CellType(uncan(self.cell_contents, g))


class CannedFunction(CannedObject):
    def get_object(self, g=None):
        if not self.module.startswith("__"):
            __import__(self.module)
            g = sys.modules[self.module].__dict__
            replacement = g.get(self.__name__)
            if getattr(replacement, "corral_replaces_stock", False):
                # An engine's own version of a stock task function (see engine/compat.py).
                return replacement
        g = {} if g is None else g
        defaults = tuple(uncan(d, g) for d in self.defaults) if self.defaults else None
        closure = tuple(uncan(c, g) for c in self.closure) if self.closure else None
        f = types.FunctionType(self.code, g, self.__name__, defaults, closure)
        if getattr(self, "kwdefaults", None):
            f.__kwdefaults__ = {k: uncan(v, g) for k, v in self.kwdefaults.items()}
        if getattr(self, "annotations", None):
            f.__annotations__ = {k: uncan(v, g) for k, v in self.annotations.items()}
        return f


class CannedPartial(CannedObject):
    def get_object(self, g=None):
        import functools

        func = uncan(self.func, g)
        args = [uncan(a, g) for a in self.args]
        keywords = {k: uncan(v, g) for k, v in self.keywords.items()}
        return functools.partial(func, *args, **keywords)


class CannedClass(CannedObject):
    def get_object(self, g=None):
        parents = tuple(uncan(p, g) for p in self.parents)
        return type(self.name, parents, {k: uncan(v, g) for k, v in self._canned_dict.items()})


class CannedArray(CannedObject):
    def get_object(self, g=None):
        import numpy

        data = self.buffers[0]
        if self.pickled:
            return pickle.loads(data)
        return numpy.frombuffer(data, dtype=self.dtype).reshape(self.shape)


class CannedBytes(CannedObject):
    def get_object(self, g=None):
        data = self.buffers[0]
        return data if isinstance(data, bytes) else memoryview(data).tobytes()


class CannedMemoryView(CannedBytes):
    def get_object(self, g=None):
        return memoryview(self.buffers[0])


class CannedBuffer(CannedBytes):
    pass


_STAND_INS = {
    (CANNING_MODULE, cls.__name__): cls
    for cls in (
        CannedObject,
        Reference,
        CannedCell,
        CannedFunction,
        CannedPartial,
        CannedClass,
        CannedArray,
        CannedBytes,
        CannedMemoryView,
        CannedBuffer,
    )
}
_STAND_INS[(CODEUTIL_MODULE, "code_ctor")] = code_ctor


def _import_module(name: str):
    """`importlib.import_module` as a pickle calls it (corral's `canned_writer` names
    ipyparallel's classes so): ipyparallel's canning modules are answered with the
    stand-ins, so no ipyparallel install is needed to read them."""
    if name in (CANNING_MODULE, CODEUTIL_MODULE):
        return types.SimpleNamespace(**{n: c for (m, n), c in _STAND_INS.items() if m == name})
    import importlib

    return importlib.import_module(name)


_STAND_INS[("importlib", "import_module")] = _import_module


class Unpickler(pickle.Unpickler):
    """A pickle reader that resolves ipyparallel's canning names to the stand-ins."""

    def __init__(self, data, buffers=None):
        super().__init__(io.BytesIO(data), buffers=buffers)

    def find_class(self, module, name):
        stand_in = _STAND_INS.get((module, name))
        if stand_in is not None:
            return stand_in
        if module == "__builtin__":
            return _dill_builtin(name)
        return super().find_class(module, name)


def _dill_builtin(name: str):
    """What dill's pickles (``use_dill()``) name in its Python 2 style ``__builtin__``
    module: ``__main__`` is the globals of functions defined in a notebook, which here
    are this process's ``__main__`` (on an engine, its user namespace)."""
    import builtins

    if name == "__main__":
        return sys.modules["__main__"].__dict__
    if name == "NoneType":
        return type(None)
    return getattr(builtins, name)


def uncan(obj: Any, g: dict | None = None) -> Any:
    if isinstance(obj, CannedObject):
        return obj.get_object(g)
    if type(obj) in (list, tuple, set, frozenset):
        return type(obj)(uncan(o, g) for o in obj)
    if type(obj) is dict:
        return {k: uncan(v, g) for k, v in obj.items()}
    return obj


def contains_canned(obj: Any) -> bool:
    """True for a canned object or a small container holding one (ipyparallel's layout)."""
    if isinstance(obj, CannedObject):
        return True
    if type(obj) in (list, tuple, set) and len(obj) < MAX_ITEMS:
        return any(isinstance(o, CannedObject) for o in obj)
    if type(obj) is dict and len(obj) < MAX_ITEMS:
        return any(isinstance(v, CannedObject) for v in obj.values())
    return False


def _restore_buffers(obj: Any, frames: list) -> None:
    """Put extracted buffers (None placeholders) back, consuming frames in order."""
    if isinstance(obj, CannedObject) and obj.buffers:
        for i, buf in enumerate(obj.buffers):
            if buf is None:
                obj.buffers[i] = frames.pop(0)


def restore_and_uncan(obj: Any, frames: list, g: dict | None) -> tuple[Any, list]:
    """ipyparallel's `deserialize_object` after the pickle is read: refill buffers in
    element (or sorted-key) order, then uncan."""
    frames = list(frames)
    if type(obj) in (list, tuple, set) and len(obj) < MAX_ITEMS:
        for item in obj:
            _restore_buffers(item, frames)
        return type(obj)(uncan(item, g) for item in obj), frames
    if type(obj) is dict and len(obj) < MAX_ITEMS:
        out = {}
        for key in sorted(obj):
            _restore_buffers(obj[key], frames)
            out[key] = uncan(obj[key], g)
        return out, frames
    _restore_buffers(obj, frames)
    return uncan(obj, g), frames
