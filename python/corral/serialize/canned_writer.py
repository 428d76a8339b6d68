"""Writing what stock ipyparallel engines need in their own "canned" form: a large top-level
numpy array and a `Reference` (anywhere in the arguments).

corral's own format keeps large buffers out of band (pickle protocol 5), which stock
ipyparallel cannot read: its `deserialize_object` calls `pickle.loads` without buffers and
refills only the buffers of a top-level `CannedObject`. Written as `CannedArray` (the pickle
holds shape and dtype, the data travels as the next frame, still without a copy) an array
is read by both stock and corral engines; a `Reference` written as ipyparallel's is resolved
by both in the engine's namespace (top level, or an item of a top-level list or dict, as
ipyparallel resolves its own).

The client need not have ipyparallel installed, and `pickle` only writes a class it can
import, so a canned object is pickled as `copyreg._reconstructor(cls, object, None)` whose
`cls` is itself written as `getattr(importlib.import_module(module), name)`: calls of
importable functions. Stock engines import their own module there; corral's `Unpickler`
answers the import with its stand-ins (see `canning`).
"""

from __future__ import annotations

import copyreg
import importlib
import pickle
import sys
from typing import Any

from corral.serialize.canning import CANNING_MODULE


class _ModuleByName:
    """Pickles as `importlib.import_module(name)`."""

    def __init__(self, name: str):
        self.name = name

    def __reduce__(self):
        return importlib.import_module, (self.name,)


class ClassByName:
    """Pickles as `getattr(<module>, name)`: a class named without importing it here."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __reduce__(self):
        return getattr, (_ModuleByName(self.module), self.name)


class CannedAs:
    """Pickles as an instance of ipyparallel's `canning.<name>` whose `__dict__` is
    `state` (what ipyparallel's own pickle of that object holds)."""

    def __init__(self, name: str, state: dict):
        self.name, self.state = name, state

    def __reduce__(self):
        return copyreg._reconstructor, (ClassByName(CANNING_MODULE, self.name), object,
                                        None), self.state


def plain_array(obj: Any, threshold: int):
    """`obj` when it is a numpy array worth a frame of its own that `CannedArray` carries
    as is (C-contiguous, no objects, no fields), else None."""
    numpy = sys.modules.get("numpy")  # an array exists only if numpy was imported
    if numpy is None or type(obj) is not numpy.ndarray:
        return None
    if obj.nbytes <= threshold or obj.dtype.hasobject or obj.dtype.fields is not None:
        return None
    return obj if obj.flags.c_contiguous else None


def canned_array_frames(array) -> list:
    """The frames of a `CannedArray`: its pickle, then the array's memory (no copy)."""
    state = {"shape": array.shape, "dtype": array.dtype.str, "pickled": False,
             "buffers": [None]}
    return [pickle.dumps(CannedAs("CannedArray", state), protocol=4),
            memoryview(array).cast("B")]


def canned_reference(name: str) -> CannedAs:
    """What a `Reference` to `name` pickles as (its `__reduce__`)."""
    return CannedAs("Reference", {"name": name, "buffers": []})
