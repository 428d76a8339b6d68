"""`Client.become_dask()` / `stop_dask()`: the cluster's engines as a dask.distributed
cluster, as in ipyparallel.

The controller runs the scheduler (`become_dask_request`: a scheduler process it starts,
listening on the controller's address unless `scheduler_args` say otherwise, and stops on
`stop_distributed_request` or when it stops); each engine runs one worker
(`corral.engine.dask_worker`, sent by name: stock ipengines need corral importable), and
`become_dask` returns once every worker has registered with the scheduler.
"""

from __future__ import annotations

from corral.engine.dask_worker import start_worker, stop_worker

__all__ = ["become_dask", "stop_dask"]

#: The controller gives a scheduler process 120 s to start (importing distributed on a
#: loaded machine is slow); the request waits a little longer than that.
SCHEDULER_TIMEOUT = 150.0


def _distributed():
    try:
        import distributed
    except ImportError as e:
        raise ImportError(
            f"become_dask() needs dask.distributed here and on the engines ({e}): "
            "pip install 'dask[distributed]'"
        ) from e
    return distributed


def become_dask(client, targets="all", port=0, nanny=False, scheduler_args=None, **worker_args):
    """Start the scheduler (once: later calls get the same one) and a worker on each
    engine of `targets`; return a `distributed.Client` connected to the scheduler.

    `port` is the scheduler's port (0: any free one); `scheduler_args` go to
    `distributed.Scheduler`; `nanny=True` starts each worker as a `Nanny` (a worker
    subprocess the nanny can restart); `worker_args` go to the `Worker`, with
    `nthreads=1` unless given (one task at a time per engine, as ipyparallel)."""
    distributed = _distributed()
    scheduler_args = dict(scheduler_args or {})
    if port:
        scheduler_args.setdefault("port", port)
    reply, _ = client._hub.request(
        "become_dask_request", {"scheduler_args": scheduler_args}, timeout=SCHEDULER_TIMEOUT
    )
    worker_args.setdefault("nthreads", 1)
    view = client.direct_view(targets, block=True)
    view.apply_sync(start_worker, reply["address"], nanny=nanny, **worker_args)
    return distributed.Client(reply["address"])


def stop_dask(client, targets="all"):
    """Close the workers on the engines of `targets`, then stop the scheduler."""
    try:
        client.direct_view(targets, block=True).apply_sync(stop_worker)
    finally:
        client._hub.request("stop_distributed_request", {})
