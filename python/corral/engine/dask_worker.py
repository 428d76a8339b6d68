"""A dask.distributed worker on an engine: the task functions behind `Client.become_dask()`
and `Client.stop_dask()`.

A corral engine runs tasks on its main thread with no event loop, while a dask `Worker`
lives on an asyncio loop, bound to the loop current where it is made. So the worker gets
a loop on a thread of its own, and is made, started and closed there; this module keeps
it referenced until `stop_worker()`. It works the same on an ipykernel engine (whose own
loop it leaves alone). The worker is also `dask_worker` and `distributed_worker` in the
engine's namespace, as ipyparallel's `become_dask_worker` makes it.

`engine.compat` puts these in place of ipyparallel's `util.become_dask_worker` and
`util.stop_distributed_worker`, so a stock client's `become_dask()` works on corral engines.
"""

from __future__ import annotations

import asyncio
import logging
import threading

__all__ = ["start_worker", "stop_worker"]

log = logging.getLogger("corral.engine")

#: Bounds on starting (registering with the scheduler) and closing a worker.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
#: How long a worker already closing on its own may take before it is left behind.
CLOSING_GRACE = 2.0
NAMES = ("dask_worker", "distributed_worker")


class WorkerThread:
    """One worker (or nanny) and the event loop thread it runs on."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="corral-dask-worker", daemon=True)
        self.worker = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def _call(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, address: str, nanny: bool, kwargs: dict) -> None:
        from distributed import Nanny, Worker

        cls = Nanny if nanny else Worker

        async def make():
            worker = cls(address, **kwargs)
            await worker
            return worker

        self.thread.start()
        try:
            self.worker = self._call(make(), START_TIMEOUT)
        except BaseException:
            self._end_loop()
            raise

    def alive_for(self, address: str) -> bool:
        """Still running, and for the scheduler at `address`."""
        from distributed.core import Status

        w = self.worker
        if w is None or w.status not in (Status.running, Status.paused):
            return False
        # A Nanny names its scheduler `scheduler_addr`; a Worker has an rpc to it.
        scheduler = getattr(w, "scheduler_addr", None) or getattr(w.scheduler, "address", None)
        return scheduler == address

    def stop(self) -> None:
        from distributed.core import Status

        w = self.worker
        try:
            if w is None:
                pass
            elif w.status in (Status.running, Status.paused):
                self._call(w.close(reason="corral stop_dask"), STOP_TIMEOUT)
            elif w.status not in (Status.closed, Status.failed):
                # Already closing, told by its scheduler (a dask client's shutdown()), and
                # maybe waiting on connections to that scheduler, now gone: it gets a short
                # grace, not the comm timeouts.
                self._call(asyncio.wait_for(w.finished(), CLOSING_GRACE), CLOSING_GRACE + 1)
        except TimeoutError:
            log.warning("dask worker %s did not finish closing; left behind", w.address)
        finally:
            self._end_loop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(STOP_TIMEOUT)


#: The engine's running worker: referenced here so it lives between tasks.
_running: WorkerThread | None = None
_lock = threading.Lock()


def _namespace() -> dict | None:
    from IPython import get_ipython

    shell = get_ipython()
    return shell.user_ns if shell is not None else None


def start_worker(address: str, nanny: bool = False, **kwargs) -> str:
    """Start a dask worker (a `Nanny` with `nanny=True`) for the scheduler at `address`,
    `kwargs` going to its constructor; wait until it has registered with the scheduler.
    Returns the worker's address. A worker already running for that scheduler is kept."""
    global _running
    with _lock:
        if _running is not None:
            if _running.alive_for(address):
                log.info("dask worker already running")
                return _running.worker.address
            old, _running = _running, None
            old.stop()
        host = WorkerThread()
        host.start(address, nanny, kwargs)
        _running = host
        ns = _namespace()
        if ns is not None:
            for name in NAMES:
                ns[name] = host.worker
        return host.worker.address


def stop_worker() -> None:
    """Close this engine's dask worker, if any, and remove its names from the namespace."""
    global _running
    with _lock:
        host, _running = _running, None
        if host is None:
            log.info("no dask worker to stop")
            return
        ns = _namespace()
        if ns is not None:
            for name in NAMES:
                if ns.get(name) is host.worker:
                    del ns[name]
        host.stop()


for _f in (start_worker, stop_worker):
    #: Stock clients' `util.become_dask_worker` / `stop_distributed_worker` run these
    #: instead on corral engines (see `engine.compat` and `serialize.canning`).
    _f.corral_replaces_stock = True
