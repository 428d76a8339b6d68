"""Parallel ``map``: cut sequences into chunks, one task per chunk, and put the results
back together in order (ipyparallel's ``ParallelFunction.map`` and ``AsyncMapResult``).

A ``DirectView`` sends one contiguous chunk to each of its engines; a ``LoadBalancedView``
makes one task per element (or per ``chunksize`` elements) and lets the scheduler place
them. Either way every task runs ``remote_helpers.map_chunk(f, *chunks)`` and returns a
list, so the flat result is the concatenation of the task results in submission order.
"""

from __future__ import annotations

import pickle
from itertools import chain, islice

from corral import error
from corral.client import remote_helpers
from corral.client.asyncresult import AsyncResult
from corral.serialize import apply_wants_canning, serialize_object

__all__ = ["AsyncMapResult", "ChunkPacker", "check_dist", "join_partitions", "map_on_view",
           "partition"]


class ChunkPacker:
    """The ``apply_request`` frames of ``map_chunk(f, *chunks)``, exactly as
    ``pack_apply_message`` makes them, but with ``map_chunk`` and ``f`` pickled once per
    map instead of once per task: pickling a function by value costs more than a small
    chunk, and every task of one ``map`` runs the same ``f`` anyway."""

    def __init__(self, f, for_stock: bool = False):
        self._head = serialize_object(remote_helpers.map_chunk)
        self._f = serialize_object(f, for_stock=for_stock)
        self._for_stock = for_stock

    def pack(self, chunks) -> list:
        arg_frames = list(self._f)
        for chunk in chunks:
            if _plain(chunk):
                # What the chosen pickler writes for plain values, without its per-object
                # hooks (cloudpickle's cost most of the time for small chunks).
                arg_frames.append(pickle.dumps(chunk, protocol=5))
            else:
                arg_frames.extend(serialize_object(chunk, for_stock=self._for_stock))
        info = dict(nargs=1 + len(chunks), narg_bufs=len(arg_frames), kw_keys=[])
        return [*self._head, pickle.dumps(info, protocol=4), *arg_frames]


_PLAIN_TYPES = frozenset({int, float, str, bool, type(None)})


def _plain(chunk) -> bool:
    """A range, or a list or tuple of builtin scalars: every pickler pickles it the same way
    (``partition`` of a range is a range)."""
    if type(chunk) is range:
        return True
    return type(chunk) in (list, tuple) and all(type(x) in _PLAIN_TYPES for x in chunk)


def partition(seq, p: int, q: int, n: int | None = None, dist: str = "b"):
    """The ``p``-th of ``q`` contiguous chunks of ``seq``; the first ``n % q`` chunks are
    one longer, so chunk sizes differ by at most one (ipyparallel's ``Map``). With
    ``dist='r'`` (round robin) the chunk is every ``q``-th element from the ``p``-th."""
    n = len(seq) if n is None else n
    if not 0 <= p < q:
        raise ValueError(f"must have 0 <= p < q, but have p={p}, q={q}")
    check_dist(dist)
    if dist == "r":
        try:
            return seq[p:n:q]
        except TypeError:
            return list(islice(seq, p, n, q))
    base, extra = divmod(n, q)
    low = p * base + min(p, extra)
    high = low + base + (1 if p < extra else 0)
    try:
        return seq[low:high]
    except TypeError:
        return list(islice(seq, low, high))


def check_dist(dist: str) -> None:
    if dist not in ("b", "r"):
        raise ValueError(f"dist must be 'b' (contiguous chunks) or 'r' (round robin), "
                         f"not {dist!r}")


def join_partitions(parts: list, dist: str = "b"):
    """Inverse of ``partition`` over the non-empty chunks, in order: arrays are
    concatenated (interleaved for ``dist='r'``), sequences joined into a list."""
    if not parts:
        return []
    first = parts[0]
    is_array = type(first).__module__ == "numpy" and type(first).__name__ == "ndarray"
    if dist == "r" and (is_array or isinstance(first, (list, tuple))):
        return _interleave(parts, is_array)
    if is_array:
        import numpy

        return numpy.concatenate(parts)
    if isinstance(first, (list, tuple)):
        return list(chain.from_iterable(parts))
    return parts


def _interleave(parts: list, is_array: bool):
    """Round-robin chunks back in order: element ``i`` of chunk ``p`` was at
    ``p + i * len(parts)``."""
    q = len(parts)
    if is_array:
        import numpy

        out = numpy.empty((sum(len(p) for p in parts), *parts[0].shape[1:]),
                          dtype=numpy.result_type(*parts))
        for p, part in enumerate(parts):
            out[p::q] = part
        return out
    return [part[i] for i in range(len(parts[0])) for part in parts if i < len(part)]


def _as_sequences(sequences) -> tuple[list, int]:
    """Sequences with a length (iterators are listed) and the common length, which is the
    shortest one's, as for builtin ``map``."""
    if not sequences:
        raise TypeError("map() needs at least one sequence")
    seqs = []
    for seq in sequences:
        try:
            len(seq)
        except TypeError:
            seq = list(seq)
        seqs.append(seq)
    return seqs, min(len(s) for s in seqs)


def map_on_view(view, f, sequences, block: bool, chunksize=None, ordered=True,
                return_exceptions=False, whole_chunks=False, dist="b"):
    """Submit ``map(f, *sequences)`` through ``view``; ``AsyncMapResult`` or, if ``block``,
    the flat list. With ``whole_chunks`` each task is ``f(*chunks)`` instead (what calling
    a ``@parallel`` function does). ``dist='r'`` deals a DirectView's engines their
    elements round robin instead of in contiguous chunks."""
    check_dist(dist)
    if view._balanced:
        dist = "b"  # one task per chunksize elements: contiguous by nature
    seqs, n = _as_sequences(sequences)
    if whole_chunks and len({len(s) for s in seqs}) > 1:
        raise ValueError(f"all sequences must have equal length, but have {[len(s) for s in seqs]}")
    if n == 0:
        return [] if block else AsyncMapResult(view.client, [], fname=_name(f))
    balanced = view._balanced
    if balanced:
        size = max(int(chunksize or 1), 1)
        nparts = -(-n // size)
        targets = [None] * nparts
    else:
        if chunksize:
            import warnings

            warnings.warn("`chunksize` is ignored unless load balancing", UserWarning,
                          stacklevel=3)
        targets = view._target_ids()
        nparts = len(targets)
    msg_ids = []
    sizes = []
    packer = None
    if not whole_chunks:
        engines = None if balanced else targets
        packer = ChunkPacker(f, apply_wants_canning(f) and view._to_stock(engines))
    submit = view._packed_submitter()
    for index, target in enumerate(targets):
        chunks = [partition(s, index, nparts, n, dist) for s in seqs]
        if len(chunks[0]) == 0:
            continue  # more engines than elements
        sizes.append(len(chunks[0]))
        if whole_chunks:
            msg_ids.append(view._submit_apply(f, tuple(chunks), {}, target))
        else:
            msg_ids.append(submit(packer.pack(chunks), target))
    ar = AsyncMapResult(view.client, msg_ids, fname=_name(f), ordered=ordered,
                        return_exceptions=return_exceptions, dist=dist, chunk_sizes=sizes)
    return ar.get() if block else ar


def _flatten_keeping_errors(chunks) -> list:
    """The flat results, a chunk's error in place of its elements."""
    flat = []
    for chunk in chunks:
        if isinstance(chunk, Exception):
            flat.append(chunk)
        else:
            flat.extend(chunk)
    return flat


def _name(f) -> str:
    return getattr(f, "__name__", "f")


class AsyncMapResult(AsyncResult):
    """Results of a ``map``: ``get()`` is the flat list; iterating yields elements as
    their chunks complete, in submission order (``ordered=True``) or arrival order.
    ``len()`` and ``progress`` count elements, as in ipyparallel, not tasks."""

    def __init__(self, client, msg_ids, fname="map", ordered=True, return_exceptions=False,
                 targets=None, dist="b", chunk_sizes=None):
        super().__init__(client, msg_ids, single=False, fname=fname, targets=targets,
                         return_exceptions=return_exceptions)
        self.ordered = ordered
        self._dist = dist
        #: Elements per task (one per msg_id); unknown (e.g. ``gather``) counts 1 each.
        self._chunk_sizes = dict(zip(self.msg_ids, chunk_sizes or ()))

    def _count_elements(self, msg_ids) -> int:
        return sum(self._chunk_sizes.get(m, 1) for m in msg_ids)

    def __len__(self):
        return self._count_elements(self.msg_ids)

    @property
    def progress(self) -> int:
        """How many elements are done."""
        return self._count_elements(m for m in self.msg_ids if self._client._core.ready(m))

    def _reconstruct(self):
        return self._join([self._client._result(m) for m in self.msg_ids])

    def _raw_results(self) -> list:
        return _flatten_keeping_errors([self._client._result(m) for m in self.msg_ids])

    def _join(self, chunks):
        if self._return_exceptions:
            return _flatten_keeping_errors(chunks)
        for c in chunks:
            if isinstance(c, Exception) and not isinstance(c, error.RemoteError):
                raise c  # e.g. TaskAborted
        error.collect_exceptions(chunks, self._fname)
        return join_partitions(chunks, self._dist)

    def _chunk(self, msg_id):
        result = self._client._result(msg_id)
        return self._join([result])

    def __iter__(self):
        """Elements as they become available: waiting per chunk, not for the whole map
        (round-robin chunks interleave, so those wait for all)."""
        if self._dist == "r":
            yield from self.get()
            return
        if self.ordered:
            for m in self.msg_ids:
                self._client._wait([m], None)
                yield from self._chunk(m)
            return
        pending = list(self.msg_ids)
        while pending:
            done = [m for m in pending if self._client._core.ready(m)]
            if not done:
                self._client._wait(pending[:1], 0.01)
                continue
            for m in done:
                pending.remove(m)
                yield from self._chunk(m)
