"""A joblib parallel backend that runs batches on a view's engines (ipyparallel's
``view.register_joblib_backend()``), so ``joblib.Parallel(backend='ipyparallel')`` and
scikit-learn's ``n_jobs`` run on a corral cluster.

Each joblib batch is one task (on a DirectView, on its engines in turn) running the
batch object (which joblib makes picklable for this purpose); its ``AsyncResult`` is the
future joblib tracks, and its done-callback, run by the client's completion thread, tells
joblib to dispatch the next batch.
"""

from __future__ import annotations

import atexit

from joblib.parallel import AutoBatchingMixin, ParallelBackendBase, register_parallel_backend

from corral.client.executor import engine_count

__all__ = ["DefaultClusterBackend", "ViewBackend", "register_default", "register_view"]


class ViewBackend(AutoBatchingMixin, ParallelBackendBase):
    """Batches of joblib calls as tasks of one corral view."""

    supports_retrieve_callback = True

    def __init__(self, view, **kwargs):
        super().__init__(**kwargs)
        self._view = view
        #: Batches submitted and maybe not done, for ``abort_everything``.
        self._submitted: list = []
        self._turn = -1

    def effective_n_jobs(self, n_jobs):
        """As ipyparallel: the view's engines, whatever ``n_jobs`` asks for."""
        return max(engine_count(self._view), 1)

    def submit(self, func, callback=None):
        if self._view._balanced:
            ar = self._view.apply_async(func)
        else:
            # A DirectView would run each batch on every engine: take turns instead.
            ids = self._view._target_ids()
            self._turn = (self._turn + 1) % len(ids)
            ar = self._view._apply(func, (), {}, False, targets=ids[self._turn])
        self._submitted.append(ar)
        if callback is not None:
            ar.add_done_callback(callback)
        return ar

    def retrieve_result_callback(self, out):
        return out.get()

    def start_call(self):
        self._submitted = []

    def abort_everything(self, ensure_ready=True):
        """joblib gives up after an error: drop this call's batches that have not started
        (nobody else's tasks)."""
        pending = [ar for ar in self._submitted if not ar.done()]
        self._submitted = []
        if pending:
            self._view.client.abort(pending, block=False)


def register_view(view, name="ipyparallel", make_default=False) -> None:
    register_parallel_backend(name, lambda **kwargs: ViewBackend(view, **kwargs),
                              make_default=make_default)


class DefaultClusterBackend(ViewBackend):
    """``corral.register_joblib_backend()`` without a view, as ipyparallel's: the default
    profile's running cluster, or, if none runs, a cluster started for this ``Parallel`` (one
    engine per core) and stopped when joblib is done with it."""

    def __init__(self, **kwargs):
        import os

        import corral

        self._cluster = None
        self._stop_cluster = None
        try:
            self._client = corral.Client()
        except FileNotFoundError:
            self._cluster = corral.Cluster(n=os.cpu_count() or 1)
            self._client = self._cluster.start_and_connect_sync()
            # Stopped by terminate(), or at exit when joblib never ran this backend (a
            # Parallel made and never called), as ipyparallel's Cluster stops at exit.
            self._stop_cluster = self._cluster.stop_cluster_sync
            atexit.register(self._stop_cluster)
        super().__init__(self._client.load_balanced_view(), **kwargs)

    def terminate(self):
        super().terminate()
        self._client.close()
        if self._stop_cluster is not None:
            atexit.unregister(self._stop_cluster)
            self._stop_cluster()
            self._stop_cluster = self._cluster = None


def register_default(name="ipyparallel", make_default=False) -> None:
    register_parallel_backend(name, DefaultClusterBackend, make_default=make_default)
