"""``ViewExecutor``: a view as a ``concurrent.futures.Executor`` (PEP 3148), as
ipyparallel's ``view.executor`` and ``Client.executor()``.

``submit`` is ``apply_async`` (an ``AsyncResult`` is a ``Future``), ``map`` iterates the
results of ``map_async`` in order as they complete. ``shutdown`` waits for what this
executor submitted but leaves the engines running: they belong to the cluster.
"""

from __future__ import annotations

import concurrent.futures
import threading

from corral import error

__all__ = ["ViewExecutor", "engine_count"]


def engine_count(view) -> int:
    """How many engines ``view`` can run on at once (ipyparallel's ``len(view)``)."""
    if view._balanced:
        targets = view.targets
        if targets is None:
            return len(view.client.ids)
        return 1 if isinstance(targets, int) else len(list(targets))
    return len(view._target_ids())


class ViewExecutor(concurrent.futures.Executor):
    """Runs callables on the engines of ``view``."""

    def __init__(self, view):
        self.view = view
        self._lock = threading.Lock()
        self._shutdown = False
        #: What this executor submitted and has not seen finish (for ``shutdown``).
        self._pending: list = []
        self._prune_at = 1024

    @property
    def _max_workers(self) -> int:
        """How many engines the view spans (ipyparallel's attribute of the same name)."""
        return engine_count(self.view)

    def _check_open(self):
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _track(self, ar):
        with self._lock:
            self._pending.append(ar)
            if len(self._pending) >= self._prune_at:
                # Amortized, so a long-lived executor does not keep every result alive.
                self._pending = [p for p in self._pending if not p.done()]
                self._prune_at = max(1024, 2 * len(self._pending))
        return ar

    def submit(self, fn, /, *args, **kwargs):
        """``view.apply_async(fn, *args, **kwargs)``: a Future of the result."""
        self._check_open()
        return self._track(self.view.apply_async(fn, *args, **kwargs))

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """An iterator over ``fn`` applied to the ``iterables``' elements, in order; raises
        ``TimeoutError`` from ``__next__`` if the results are not all in ``timeout``
        seconds after this call, and the first remote error where it occurs."""
        self._check_open()
        kwargs = {"chunksize": chunksize} if self.view._balanced else {}
        ar = self._track(self.view.map_async(fn, *iterables, **kwargs))
        return self._results(ar, timeout)

    @staticmethod
    def _results(ar, timeout):
        if timeout is not None and not ar.wait(timeout):
            ar.cancel()
            raise error.TimeoutError(f"map results not all ready after {timeout} s")
        yield from ar

    def shutdown(self, wait=True, *, cancel_futures=False):
        """No new submissions; with ``wait``, block until what was submitted is done;
        with ``cancel_futures``, cancel what has not started. Engines keep running."""
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
            self._pending = []
        if cancel_futures:
            for ar in pending:
                ar.cancel()
        if wait:
            for ar in pending:
                if not ar.cancelled():
                    ar.wait()
