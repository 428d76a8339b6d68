"""A STOCK ipyparallel client's ``become_dask()`` / ``stop_dask()`` against corral's
controller (``become_dask_request`` / ``stop_distributed_request``), with stock engines
and with corral engines (which run corral's worker in place of
``ipyparallel.util.become_dask_worker``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ipp = pytest.importorskip("ipyparallel")
distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

from cluster_processes import (  # noqa: E402
    Processes,
    corral_engine_argv,
    start_corral_controller,
    stock_engine_argv,
    wait_for,
)

N_ENGINES = 2


@ipp.interactive
def identity(x):
    return x


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(params=["stock-engines", "corral-engines"])
def stock_client(tmp_path: Path, request):
    procs = Processes(tmp_path)
    client = None
    failed_before = request.session.testsfailed
    engine_argv = stock_engine_argv if request.param == "stock-engines" else corral_engine_argv
    try:
        start_corral_controller(procs, tmp_path)
        for i in range(N_ENGINES):
            procs.start(f"engine{i}", engine_argv(tmp_path))
        client = ipp.Client(profile_dir=str(tmp_path))
        client.wait_for_engines(N_ENGINES, timeout=60)
        yield client
    finally:
        if client is not None:
            client.close()
        procs.stop_all()
        if request.session.testsfailed > failed_before:
            print(procs.report())


# ipyparallel's own test_become_dask ignores this warning of the stock engines' tornado.
@pytest.mark.filterwarnings("ignore:make_current")
def test_stock_client_become_dask_computes_and_stops(stock_client):
    c = stock_client
    engine_pids = sorted(c[:].apply_sync(os.getpid))
    executor = c.become_dask()
    try:
        # A stock engine starts its worker in the background: wait for both to register.
        wait_for(lambda: len(executor.scheduler_info()["workers"]) == N_ENGINES, 60,
                 "both engines' workers")
        reprs = c[:].apply_sync(repr, ipp.Reference("distributed_worker"))
        assert all("Worker" in r for r in reprs), reprs
        assert sorted(executor.run(os.getpid).values()) == engine_pids

        squares = executor.map(lambda x: x * x, range(10))
        assert executor.submit(sum, squares).result(timeout=60) == 285
        x = da.ones((200, 200), chunks=(50, 50))
        assert float(executor.compute(x.sum()).result(timeout=60)) == 40_000.0

        scheduler = executor.run_on_scheduler(os.getpid)
        again = c.become_dask()
        assert again.scheduler.address == executor.scheduler.address
        again.close()
    finally:
        executor.close()
    c.stop_dask()
    wait_for(lambda: not alive(scheduler), 15, "the scheduler process to exit")
    ar = c[:].apply_async(identity, ipp.Reference("distributed_worker"))
    with pytest.raises(ipp.error.CompositeError, match="NameError"):
        ar.get(timeout=30)


def test_corral_client_become_dask_on_a_stock_cluster(stock):
    """corral's client against a stock ipcontroller (whose hub runs the scheduler) and
    stock ipengines (running corral's worker function on their own loop thread)."""
    c = stock.client
    dc = c.become_dask()
    try:
        assert len(dc.scheduler_info()["workers"]) == 2
        assert c[:].apply_sync(_has_worker_name) == [True, True]
        x = da.arange(1000, chunks=100)
        assert int(x.sum().compute()) == sum(range(1000))
    finally:
        dc.close()
    c.stop_dask()
    assert c[:].apply_sync(_has_worker_name) == [False, False]


def _has_worker_name():
    from IPython import get_ipython

    return "distributed_worker" in get_ipython().user_ns
