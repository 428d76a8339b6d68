"""``Client.become_dask()`` / ``stop_dask()`` with corral's client, controller and engines:
the controller runs a dask.distributed scheduler process, each engine a worker."""

from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from cluster_processes import wait_for
from corral import Reference
from corral.error import RemoteError

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def scheduler_pid(dask_client) -> int:
    return dask_client.run_on_scheduler(os.getpid)


def test_become_dask_computes_a_dask_array_and_stop_dask_ends_it(start_cluster):
    cluster, client = start_cluster(2)
    engine_pids = sorted(client[:].apply_sync(os.getpid))
    dc = client.become_dask()
    try:
        workers = dc.scheduler_info()["workers"]
        assert len(workers) == 2, "every engine's worker registered before become_dask returned"
        assert sorted(dc.run(os.getpid).values()) == engine_pids, "workers run in the engines"
        assert all(w["nthreads"] == 1 for w in workers.values())
        x = da.arange(10_000, chunks=1_000)
        assert int((x * x).sum().compute()) == sum(i * i for i in range(10_000))
        reprs = client[:].apply_sync(repr, Reference("distributed_worker"))
        assert all("Worker" in r for r in reprs), reprs

        pid = scheduler_pid(dc)
        assert parent_of(pid) == cluster.controller.pid, "the controller runs the scheduler"
        host = dc.scheduler.address.split("://")[1].rsplit(":", 1)[0]
        assert host == "127.0.0.1", "the scheduler listens on the controller's address"

        again = client.become_dask()
        try:
            assert again.scheduler.address == dc.scheduler.address, "the same scheduler"
            assert len(again.scheduler_info()["workers"]) == 2, "no second worker per engine"
        finally:
            again.close()
    finally:
        dc.close()
    client.stop_dask()
    wait_for(lambda: not alive(pid), 15, "the scheduler process to exit after stop_dask")
    with pytest.raises(RemoteError, match="NameError"):
        client[:].apply_sync(repr, Reference("distributed_worker"))

    # A new scheduler after a stop, on a subset of engines, with worker arguments.
    dc = client.become_dask(targets=[0], nthreads=2)
    try:
        assert [w["nthreads"] for w in dc.scheduler_info()["workers"].values()] == [2]
        assert scheduler_pid(dc) != pid
        assert dc.submit(sum, [1, 2, 3]).result(timeout=30) == 6
    finally:
        dc.close()
    client.stop_distributed(targets=[0])


def test_a_scheduler_closed_by_a_dask_client_is_started_again(start_cluster):
    _, client = start_cluster(2)
    dc = client.become_dask()
    first = dc.scheduler.address
    dc.shutdown()  # closes the scheduler (its process exits) and the workers
    dc = client.become_dask()
    try:
        assert dc.scheduler.address != first
        assert len(dc.scheduler_info()["workers"]) == 2, "new workers for the new scheduler"
        assert dc.submit(sum, [1, 2]).result(timeout=30) == 3
    finally:
        dc.close()
    client.stop_dask()


def test_the_scheduler_goes_with_the_controller(start_cluster):
    cluster, client = start_cluster(1)
    dc = client.become_dask()
    pid = scheduler_pid(dc)
    dc.close()
    cluster.stop_cluster_sync()
    wait_for(lambda: not alive(pid), 15, "the scheduler process to exit with the cluster")

    cluster, client = start_cluster(1)
    dc = client.become_dask()
    pid = scheduler_pid(dc)
    dc.close()
    os.kill(cluster.controller.pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 15, "the scheduler process to exit after SIGKILL of the controller")


def test_a_python_without_dask_gets_a_clear_error(start_cluster, tmp_path):
    # A real Python that cannot import distributed: no site-packages at all.
    python = tmp_path / "python-without-dask"
    python.write_text(f"#!/bin/sh\nexec {os.path.realpath(sys.executable)} -I -S \"$@\"\n")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    _, client = start_cluster(1, controller_args=["--python", str(python)])
    with pytest.raises(RemoteError) as info:
        client.become_dask()
    assert info.value.ename == "ModuleNotFoundError"
    assert "--python" in str(info.value) and str(python) in str(info.value)

    _, client = start_cluster(1, controller_args=["--python", str(tmp_path / "nope")])
    with pytest.raises(RemoteError, match="cannot run .*nope"):
        client.become_dask()
    # stop_dask with no scheduler is fine, as in ipyparallel.
    client.stop_dask()
    assert client[:].apply_sync(lambda: 1) == [1]


def test_nanny_workers_are_subprocesses_of_the_engines(start_cluster):
    _, client = start_cluster(1)
    engine_pid = client[0].apply_sync(os.getpid)
    dc = client.become_dask(nanny=True)
    try:
        (worker_pid,) = dc.run(os.getpid).values()
        assert worker_pid != engine_pid and parent_of(worker_pid) == engine_pid
        assert dc.submit(sum, [4, 5]).result(timeout=60) == 9
    finally:
        dc.close()
    client.stop_dask()
    wait_for(lambda: not alive(worker_pid), 15, "the nanny's worker process to exit")
