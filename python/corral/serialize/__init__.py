"""Turning Python objects into ZeroMQ frames and back.

corral's own format is pickle protocol 5 (cloudpickle, so functions defined in a notebook
travel by value) with large buffers (numpy arrays) as separate frames, zero-copy. Payloads
from stock ipyparallel peers ("canned" objects) are decoded too, without importing
ipyparallel (see `canning`). Frame layouts match ipyparallel's (`pack_apply_message`:
function, info dict, then the arguments' frames), so the two stay interchangeable.
"""

from corral.serialize.serialize import (
    BUFFER_THRESHOLD,
    apply_wants_canning,
    deserialize_object,
    is_ipyparallel_payload,
    pack_apply_message,
    serialize_object,
    unpack_apply_message,
)
from corral.serialize.switch import use_cloudpickle, use_dill, use_pickle

__all__ = [
    "BUFFER_THRESHOLD",
    "apply_wants_canning",
    "deserialize_object",
    "is_ipyparallel_payload",
    "pack_apply_message",
    "serialize_object",
    "unpack_apply_message",
    "use_cloudpickle",
    "use_dill",
    "use_pickle",
]
