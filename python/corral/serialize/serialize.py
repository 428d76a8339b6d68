"""serialize_object / pack_apply_message and their inverses (see the package doc)."""

from __future__ import annotations

import pickle
import types
from typing import Any, Iterable, Sequence

from corral.serialize import canned_writer, canning, function_cache, stock_canning, switch

#: Buffers larger than this many bytes travel as their own frame (ipyparallel's MAX_BYTES).
BUFFER_THRESHOLD = 1024

Frame = Any  # bytes, memoryview, pickle.PickleBuffer, or zmq-owned bytes


def serialize_object(
    obj: Any, buffer_threshold: int = BUFFER_THRESHOLD, out_of_band: bool = True,
    for_stock: bool = False,
) -> list[Frame]:
    """Pickle `obj` into frames: the pickle, then each large buffer as its own frame.

    With `out_of_band=False` everything stays inside the one pickle, which any pickle
    reader (a stock ipyparallel client included) can load. Otherwise a large top-level
    numpy array is written as ipyparallel cans it (see `canned_writer`), which stock and
    corral peers both read, without a copy.

    `for_stock`: for stock ipyparallel engines, which read no out-of-band buffers but a
    large top-level array, and rebind only functions in ipyparallel's canned form (see
    `stock_canning`; only when functions run in the engine's namespace, `use_pickle()`).
    """
    array = canned_writer.plain_array(obj, buffer_threshold) if out_of_band else None
    if array is not None:
        return canned_writer.canned_array_frames(array)
    if for_stock and switch.functions_use_engine_namespace():
        canned = stock_canning.can_top_level(obj)
        return pickle_to_frames(stock_canning.stock_dumps, canned, buffer_threshold, False)
    dumps = switch.current_dumps()
    if type(obj) is types.FunctionType:
        kept = function_cache.dumps(dumps, obj)
        if kept is not None:
            return [kept]
    return pickle_to_frames(dumps, obj, buffer_threshold, out_of_band)


def pickle_to_frames(
    dumps, obj: Any, buffer_threshold: int = BUFFER_THRESHOLD, out_of_band: bool = True
) -> list[Frame]:
    """`serialize_object` with a chosen pickler (`pickle.dumps` is faster than cloudpickle
    for plain data, but sends functions by reference)."""
    buffers: list[Frame] = []

    def keep_out_of_band(buf: pickle.PickleBuffer) -> bool:
        raw = buf.raw()
        if raw.nbytes > buffer_threshold:
            buffers.append(raw)
            return False
        return True

    frame0 = dumps(obj, protocol=5, buffer_callback=keep_out_of_band if out_of_band else None)
    return [frame0, *buffers]


def deserialize_object(frames: Sequence[Frame], g: dict | None = None) -> tuple[Any, list]:
    """Inverse of `serialize_object`, for corral's and ipyparallel's formats.

    Returns the object and the frames it did not use. `g` is the namespace that functions
    canned by ipyparallel in `__main__` get as globals (the engine's user namespace).
    """
    frames = list(frames)
    rest = iter(frames[1:])
    obj = canning.Unpickler(frames[0], buffers=rest).load()
    remaining = list(rest)
    if canning.contains_canned(obj):
        obj, remaining = canning.restore_and_uncan(obj, remaining, g)
    return obj, remaining


def pack_apply_message(
    f: Any,
    args: Sequence = (),
    kwargs: dict | None = None,
    buffer_threshold: int = BUFFER_THRESHOLD,
    out_of_band: bool = True,
    for_stock: bool = False,
) -> list[Frame]:
    """Frames of an `apply_request`: function, info dict, then each argument's frames
    (`for_stock`: see `serialize_object`)."""
    kwargs = kwargs or {}
    arg_frames: list[Frame] = []
    for arg in args:
        arg_frames.extend(serialize_object(arg, buffer_threshold, out_of_band, for_stock))
    kw_keys = sorted(kwargs)
    kwarg_frames: list[Frame] = []
    for key in kw_keys:
        kwarg_frames.extend(
            serialize_object(kwargs[key], buffer_threshold, out_of_band, for_stock))
    info = dict(nargs=len(args), narg_bufs=len(arg_frames), kw_keys=kw_keys)
    return [
        *serialize_object(f, buffer_threshold, out_of_band, for_stock),
        pickle.dumps(info, protocol=4),
        *arg_frames,
        *kwarg_frames,
    ]


def unpack_apply_message(
    frames: Sequence[Frame], g: dict | None = None,
    reuse: Any = None,
) -> tuple:
    """Inverse of `pack_apply_message`: `(f, args, kwargs)`. `reuse`: the engine's last
    function (`engine.namespace.LastSentFunction`: `get(frame)`, `keep(frame, f)`), taken
    instead of unpickling the same pickle again."""
    frames = list(frames)
    if len(frames) < 2:
        raise ValueError(f"an apply message needs at least 2 frames, got {len(frames)}")
    f = reuse.get(frames[0]) if reuse is not None else None
    if f is not None:
        frames = frames[1:]
    else:
        first, count = frames[0], len(frames)
        f, frames = deserialize_object(frames, g)
        # Only a function that came in its one frame and is not bound to `g` yet (as
        # ipyparallel's canned functions are) is a private template.
        if reuse is not None and len(frames) == count - 1 and getattr(f, "__globals__", g) is not g:
            reuse.keep(first, f)
        elif reuse is not None:
            reuse.keep(first, None)
    info = pickle.loads(frames.pop(0))
    arg_frames, kwarg_frames = frames[: info["narg_bufs"]], frames[info["narg_bufs"] :]
    args = []
    for _ in range(info["nargs"]):
        arg, arg_frames = deserialize_object(arg_frames, g)
        args.append(arg)
    kwargs = {}
    for key in info["kw_keys"]:
        kwargs[key], kwarg_frames = deserialize_object(kwarg_frames, g)
    return f, tuple(args), kwargs


def apply_wants_canning(f: Any, args: Sequence = (), kwargs: dict | None = None) -> bool:
    """Whether `pack_apply_message(..., for_stock=True)` would can a function (so whether
    it matters that the engines are stock)."""
    if not switch.functions_use_engine_namespace():
        return False
    return any(stock_canning.wants_canning(o) for o in (f, *args, *(kwargs or {}).values()))


def is_ipyparallel_payload(frames: Iterable[Frame]) -> bool:
    """True when a message's payload was canned by stock ipyparallel, so a reply to it
    should be plain in-band pickles that stock ipyparallel can read."""
    for frame in frames:
        return canning.CANNING_MODULE.encode() in bytes(frame[:4096])
    return False
