"""The MPI launcher on Open MPI: engines are the ranks of one `mpiexec` world, mpi4py works
between them, the Data Publication flow runs on them, and stop leaves no process."""

import json
import shutil
import time

import psutil
import pytest

import corral

from cluster_processes import wait_for

N = 3


@pytest.fixture(scope="module", autouse=True)
def _mpi_installed():
    # `make install` installs Open MPI (the Makefile's `mpi` target) and mpi4py: a missing
    # one is a broken install, not a reason to skip.
    if shutil.which("mpiexec") is None:
        pytest.fail("mpiexec is not on PATH: run `make install` (it installs openmpi-bin)")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.fail("mpi4py is not installed: run `make install` (requirements-dev.txt)")


@pytest.fixture
def mpi_cluster(tmp_path):
    cluster = corral.Cluster(n=N, engines="mpi", profile_dir=tmp_path / "profile_default",
                             cluster_id="mpi", engine_timeout=90)
    try:
        client = cluster.start_and_connect_sync()
        yield cluster, client
    except Exception:
        for log in sorted((tmp_path / "profile_default" / "log").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        cluster.stop_cluster_sync()


def _processes_of(cluster, key):
    """Every process on this machine started for this cluster: the controller names its
    profile dir; mpiexec and the engines carry its key in $IPP_CONNECTION_INFO."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        env = proc.info["environ"] or {}
        if str(cluster.profile_dir) in cmd or key in env.get("IPP_CONNECTION_INFO", ""):
            found.append((proc.pid, cmd))
    return found


def test_engines_are_the_ranks_of_one_world(mpi_cluster):
    cluster, rc = mpi_cluster
    dv = rc[:]
    ranks = dv["mpi_rank"]
    assert ranks == rc.ids == list(range(N)), "each engine asked for its rank as its id"
    assert dv["mpi_size"] == [N] * N

    def world():
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        return comm.rank, comm.size, comm.allreduce(comm.rank + 1)

    results = dv.apply_sync(world)
    assert sorted(r for r, _, _ in results) == list(range(N))
    assert {(size, total) for _, size, total in results} == {(N, N * (N + 1) // 2)}
    (launcher,) = cluster.engines.values()
    assert len(launcher.local_ranks()) == N
    assert launcher.mpiexec.running()


def test_px_style_rank_variable_and_a_collective_in_execute(mpi_cluster):
    _, rc = mpi_cluster
    dv = rc[:]
    dv.execute("from mpi4py import MPI\nrank = MPI.COMM_WORLD.rank\n"
               "everyone = MPI.COMM_WORLD.allgather(rank)", block=True)
    assert sorted(dv["rank"]) == list(range(N))
    assert dv["everyone"] == [list(range(N))] * N


def halo_simulation(steps, pause):
    """1-D heat equation split over ranks; rank 0 gathers the field and publishes it."""
    import time

    import numpy as np
    from mpi4py import MPI

    from corral.datapub import publish_data

    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    u = np.zeros(10 + 2)
    if rank == 0:
        u[1] = 100.0
    for step in range(steps):
        left, right = (rank - 1) % size, (rank + 1) % size
        u[0] = comm.sendrecv(u[-2], dest=right, source=left)
        u[-1] = comm.sendrecv(u[1], dest=left, source=right)
        u[1:-1] += 0.25 * (u[:-2] - 2 * u[1:-1] + u[2:])
        field = comm.gather(u[1:-1].copy(), root=0)
        if rank == 0:
            publish_data({"step": step, "field": np.concatenate(field)})
        time.sleep(pause)
    return float(comm.allreduce(u[1:-1].sum()))


def test_seed_flow_on_mpi_engines(mpi_cluster):
    """Publish inside a loop, ar.data live, final when get() returns."""
    _, rc = mpi_cluster
    dv = rc[:]
    root = rc.ids[dv["mpi_rank"].index(0)]
    ar = dv.apply_async(halo_simulation, 10, 0.2)
    seen = set()
    deadline = time.monotonic() + 60
    while not ar.ready() and time.monotonic() < deadline:
        seen.update(d.get("step") for d in ar.data)
        time.sleep(0.05)
    totals = ar.get(timeout=60)
    assert len(seen - {None}) >= 3, f"saw only steps {seen} while running"
    assert len(set(round(t, 6) for t in totals)) == 1 and totals[0] == pytest.approx(100.0)
    by_engine = dict(zip(rc.ids, ar.data))
    assert by_engine[root]["step"] == 9, "rank 0's last publication is in ar.data at get()"
    assert by_engine[root]["field"].shape == (10 * N,)
    assert by_engine[root]["field"].sum() == pytest.approx(100.0)
    assert all(d == {} for e, d in by_engine.items() if e != root), "only rank 0 publishes"


def test_sigint_interrupts_tasks_on_mpi_engines_and_restart_makes_a_new_world(mpi_cluster):
    """SIGINT goes to the ranks (mpiexec would end the job on it): tasks are interrupted,
    the world lives on; restart_engines replaces the whole mpiexec job."""
    import signal

    from corral.error import RemoteError

    cluster, rc = mpi_cluster

    def nap():
        import time

        from corral.datapub import publish_data

        publish_data({"started": True})
        time.sleep(60)

    ar = rc[:].apply_async(nap)
    wait_for(lambda: all(d.get("started") for d in ar.data), 30, "the tasks to start")
    cluster.signal_engines_sync(signal.SIGINT)
    with pytest.raises(RemoteError, match="KeyboardInterrupt"):
        ar.get(timeout=30)
    (launcher,) = cluster.engines.values()
    assert launcher.mpiexec.running()
    assert sorted(rc[:]["mpi_rank"]) == list(range(N))

    old_job = launcher.mpiexec.pid
    old_ids = set(rc.ids)
    cluster.restart_engines_sync()
    (launcher,) = cluster.engines.values()
    assert launcher.mpiexec.pid != old_job and not psutil.pid_exists(old_job)

    def new_world():
        ids = set(k for k in rc.queue_status() if isinstance(k, int))
        return len(ids) == N and not ids & old_ids

    wait_for(new_world, 90, "the restarted world's engines")
    assert sorted(rc[:]["mpi_rank"]) == list(range(N))


def test_stop_leaves_no_mpiexec_or_engine_process(tmp_path):
    cluster = corral.Cluster(n=2, engines="mpi", profile_dir=tmp_path / "profile_default",
                             cluster_id="mpistop", engine_timeout=90)
    try:
        rc = cluster.start_and_connect_sync()
        assert rc[:].apply_sync(lambda: 1) == [1, 1]
        (launcher,) = cluster.engines.values()
        pids = [launcher.mpiexec.pid, *(r.pid for r in launcher.local_ranks()), cluster.controller.pid]
        assert len(pids) == 4
        key = json.loads(cluster.engine_file.read_text())["key"]
        assert len(_processes_of(cluster, key)) == 4
    finally:
        cluster.stop_cluster_sync()
    wait_for(lambda: not [p for p in pids if psutil.pid_exists(p)
                          and psutil.Process(p).status() != psutil.STATUS_ZOMBIE], 15, "processes to exit")
    assert _processes_of(cluster, key) == []


def test_cli_start_engines_mpi_daemonized_then_stop_leaves_nothing(tmp_path):
    import subprocess
    import sys

    profile = tmp_path / "profile_default"

    def corral_cmd(*args):
        return subprocess.run([sys.executable, "-m", "corral", "cluster", *args, "--profile-dir", str(profile)],
                              capture_output=True, text=True, timeout=120)

    started = corral_cmd("start", "-n", "2", "--engines", "mpi", "--daemonize")
    assert started.returncode == 0, started.stderr
    record = json.loads((profile / "security" / "cluster-.json").read_text())
    (engine_set,) = record["engines"]["sets"].values()
    assert record["engines"]["class"] == "mpi" and len(engine_set["ranks"]) == 2
    pids = [record["controller"]["state"]["pid"], engine_set["mpiexec"]["pid"],
            *(r["pid"] for r in engine_set["ranks"])]
    key = json.loads((profile / "security" / "ipcontroller-engine.json").read_text())["key"]
    c = corral.Client(profile_dir=str(profile))
    try:
        assert sorted(c[:]["mpi_rank"]) == [0, 1]
    finally:
        c.close()
        stopped = corral_cmd("stop")
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: not [p for p in pids if psutil.pid_exists(p)
                          and psutil.Process(p).status() != psutil.STATUS_ZOMBIE], 15, "processes to exit")
    cluster = corral.Cluster(profile_dir=profile, cluster_id="", shutdown_atexit=False)
    assert _processes_of(cluster, key) == []
