"""Writing the two top-level arguments stock ipyparallel engines need in their own "canned"
form: a large numpy array and a `Reference`.

corral's own format keeps large buffers out of band (pickle protocol 5), which stock
ipyparallel cannot read: its `deserialize_object` calls `pickle.loads` without buffers and
refills only the buffers of a top-level `CannedObject`. Written as `CannedArray` (the pickle
holds shape and dtype, the data travels as the next frame, still without a copy) an array
is read by both stock and corral engines (`canning.Unpickler` maps the names); a
`Reference` written as ipyparallel's is resolved by both in the engine's namespace.

The pickles are assembled from opcodes because the class names belong to ipyparallel,
which the client need not have installed: the `pickle` module only writes a class it can
import. The state dict is an ordinary protocol-2 pickle spliced in; protocol 2 stores memo
entries at explicit indices and the prefix stores none, so the splice stays consistent.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

from corral.serialize.canning import CANNING_MODULE


def _canned(class_name: str, state: dict) -> bytes:
    """A pickle of `CANNING_MODULE.class_name` whose `__dict__` is `state`."""
    body = pickle.dumps(state, protocol=2)
    assert body[:2] == b"\x80\x02" and body[-1:] == pickle.STOP
    return b"".join(
        (
            b"\x80\x02",
            pickle.GLOBAL + f"{CANNING_MODULE}\n{class_name}\n".encode(),
            pickle.EMPTY_TUPLE,
            pickle.NEWOBJ,
            body[2:-1],
            pickle.BUILD,
            pickle.STOP,
        )
    )


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
    state = {"shape": array.shape, "dtype": array.dtype.str, "pickled": False, "buffers": [None]}
    return [_canned("CannedArray", state), memoryview(array).cast("B")]


def canned_reference(name: str) -> bytes:
    """The pickle of a `Reference` to `name` in the engine's namespace."""
    return _canned("Reference", {"name": name, "buffers": []})
