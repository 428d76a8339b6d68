"""ipyparallel 8+'s Cluster API on corral: the async methods, engine sets (start, stop,
signal, restart), to_dict/from_file, ClusterManager, the default n, automatic restart of a
dead engine and $IPP_CONNECTION_INFO, on real controller and engine processes."""

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import corral
from corral.error import RemoteError

from cluster_processes import wait_for


def _gone(pids, timeout=15.0):
    """Waits until none of `pids` is a live process; returns those still alive."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.05)
    return alive


@pytest.fixture
def profile_dir(tmp_path):
    return tmp_path / "profile_default"


@pytest.fixture
def clusters():
    made = []
    yield made
    for c in made:
        c.stop_cluster_sync()


def _controller_ids(client):
    return sorted(k for k in client.queue_status() if isinstance(k, int))


def test_default_n_is_one_engine_per_cpu_core(profile_dir, clusters):
    cluster = corral.Cluster(profile_dir=profile_dir, cluster_id="cpus")
    clusters.append(cluster)
    assert cluster.n is None
    client = cluster.start_and_connect_sync()
    assert len(client.ids) == os.cpu_count()


def test_async_with_and_the_async_methods(profile_dir):
    async def main():
        async with corral.Cluster(n=2, profile_dir=profile_dir, cluster_id="aw") as rc:
            assert rc[:].apply_sync(lambda: 7) == [7, 7]
        assert not (profile_dir / "security" / "ipcontroller-aw-client.json").exists()

        cluster = corral.Cluster(profile_dir=profile_dir, cluster_id="am")
        try:
            await cluster.start_controller()
            first = await cluster.start_engines(1)
            second = await cluster.start_engines(2)
            assert first != second and set(cluster.engines) == {first, second}
            rc = await cluster.connect_client()
            await cluster.wait_for_engines(rc)
            assert len(rc.ids) == 3
            await cluster.stop_engines(second)
            await asyncio.to_thread(wait_for, lambda: len(_controller_ids(rc)) == 1, 30, "two engines to go")
            assert list(cluster.engines) == [first]
        finally:
            await cluster.stop_cluster()
        assert cluster.engines == {} and cluster.controller is None
        assert not cluster.cluster_file.exists()

    asyncio.run(main())


def test_engine_sets_stop_one_set_only(profile_dir, clusters):
    cluster = corral.Cluster(profile_dir=profile_dir, cluster_id="sets")
    clusters.append(cluster)
    cluster.start_controller_sync()
    a = cluster.start_engines_sync(1)
    b = cluster.start_engines_sync(2)
    rc = cluster.connect_client_sync()
    cluster.wait_for_engines_sync(rc)
    a_pids = cluster.engines[a].pids
    b_pids = cluster.engines[b].pids
    cluster.stop_engines_sync(b)
    assert _gone(b_pids) == []
    assert all(psutil.pid_exists(p) for p in a_pids)
    wait_for(lambda: len(_controller_ids(rc)) == 1, 30, "the other set's engines to unregister")
    assert rc[:].apply_sync(lambda: 1) == [1] * len(rc.ids)
    with pytest.raises(KeyError, match="no engine set"):
        cluster.stop_engines_sync("nope")


def test_a_script_s_cluster_stops_at_exit_and_a_dropped_cluster_stops(profile_dir):
    """ipyparallel's lifetime rules: `rc = Cluster(...).start_and_connect_sync()` keeps the
    cluster (as `rc.cluster`) until the script ends, then stops it; a cluster object
    dropped without a client stops when collected."""
    script = (
        "import json, os, corral\n"
        f"rc = corral.Cluster(n=2, profile_dir={str(profile_dir)!r}, cluster_id='script')"
        ".start_and_connect_sync()\n"
        "import gc; gc.collect()\n"
        "rc.wait_for_engines(timeout=30)\n"
        "pids = [rc.cluster.controller.pid, *rc[:].apply_sync(os.getpid)]\n"
        "print(json.dumps(pids))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    pids = json.loads(out.stdout.splitlines()[-1])
    assert len(pids) == 3
    assert _gone(pids) == [], "the script's controller and engines outlived it"

    cluster = corral.Cluster(n=1, profile_dir=profile_dir, cluster_id="dropped")
    rc = cluster.start_and_connect_sync()
    assert rc.cluster is cluster
    pids = [cluster.controller.pid, *rc[:].apply_sync(os.getpid)]
    del cluster, rc
    gc.collect()
    assert _gone(pids) == [], "a collected Cluster left its processes running"


def test_signal_engines_interrupts_a_running_task_and_engines_serve_on(profile_dir, clusters):
    cluster = corral.Cluster(n=2, profile_dir=profile_dir, cluster_id="sig")
    clusters.append(cluster)
    rc = cluster.start_and_connect_sync()

    def nap():
        import time

        from corral.datapub import publish_data

        publish_data({"started": True})
        time.sleep(60)

    ar = rc[:].apply_async(nap)
    wait_for(lambda: all(d.get("started") for d in ar.data), 30, "the tasks to start")
    cluster.signal_engines_sync(signal.SIGINT)
    with pytest.raises(RemoteError) as e:
        ar.get(timeout=30)
    assert "KeyboardInterrupt" in str(e.value)
    assert rc[:].apply_sync(lambda: 2) == [2, 2]


def test_restart_engines_replaces_the_processes(profile_dir, clusters):
    cluster = corral.Cluster(n=2, profile_dir=profile_dir, cluster_id="rs")
    clusters.append(cluster)
    rc = cluster.start_and_connect_sync()
    (set_id,) = cluster.engines
    old_pids = cluster.engine_pids()
    old_ids = list(rc.ids)
    cluster.restart_engines_sync()
    assert list(cluster.engines) == [set_id], "the set keeps its id"
    assert _gone(old_pids) == []
    new_pids = cluster.engine_pids()
    assert len(new_pids) == 2 and not set(new_pids) & set(old_pids)
    wait_for(lambda: len(_controller_ids(rc)) == 2 and set(_controller_ids(rc)).isdisjoint(old_ids),
             60, "two new engines")
    assert rc[:].apply_sync(lambda: 3) == [3, 3]


def test_to_dict_from_file_and_stop_from_another_cluster_object(profile_dir, clusters):
    cluster = corral.Cluster(n=2, profile_dir=profile_dir, cluster_id="ff")
    clusters.append(cluster)
    rc = cluster.start_and_connect_sync()
    rc.close()
    d = cluster.to_dict()
    assert d["cluster"]["cluster_id"] == "ff" and d["engines"]["class"] == "local"
    assert json.loads(cluster.cluster_file.read_text()) == json.loads(json.dumps(d))
    pids = [cluster.controller.pid, *cluster.engine_pids()]

    loaded = corral.Cluster.from_file(profile_dir=profile_dir, cluster_id="ff")
    assert loaded.is_running()
    assert loaded.to_dict()["engines"]["sets"].keys() == d["engines"]["sets"].keys()
    assert sorted([loaded.controller.pid, *loaded.engine_pids()]) == sorted(pids)
    client = loaded.connect_client_sync()
    assert client[:].apply_sync(lambda: 4) == [4, 4]
    loaded.stop_cluster_sync()
    assert _gone(pids) == []
    assert not loaded.cluster_file.exists()
    assert not (profile_dir / "security" / "ipcontroller-ff-client.json").exists()
    with pytest.raises(FileNotFoundError, match="corral cluster list"):
        corral.Cluster.from_file(profile_dir=profile_dir, cluster_id="ff")


def test_cluster_manager_lists_and_loads_clusters(profile_dir, clusters):
    for cid in ("m1", "m2"):
        c = corral.Cluster(n=1, profile_dir=profile_dir, cluster_id=cid)
        clusters.append(c)
        c.start_cluster_sync()
    manager = corral.ClusterManager()
    found = manager.load_clusters(profile_dir=profile_dir)
    assert sorted(found) == ["default:m1", "default:m2"]
    assert all(c.is_running() for c in found.values())
    key, fresh = manager.new_cluster(n=1, profile_dir=profile_dir, cluster_id="m3")
    assert key == "default:m3" and manager.get_cluster(key) is fresh
    manager.remove_cluster(key)
    with pytest.raises(KeyError):
        manager.new_cluster(profile_dir=profile_dir, cluster_id="m1")


def test_auto_restart_replaces_an_engine_that_dies(profile_dir, clusters):
    cluster = corral.Cluster(n=1, profile_dir=profile_dir, cluster_id="ar",
                             engine_launcher_options={"auto_restart": True})
    clusters.append(cluster)
    rc = cluster.start_and_connect_sync()
    (first,) = rc.ids
    (pid,) = cluster.engine_pids()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: any(i != first for i in _controller_ids(rc)), 60, "a replacement engine")
    (launcher,) = cluster.engines.values()
    assert launcher.restarts == 1
    new = [i for i in _controller_ids(rc) if i != first]
    assert rc[new].apply_sync(lambda: 5) == [5]
    (new_pid,) = cluster.engine_pids()
    assert new_pid != pid


def test_engines_get_connection_info_in_their_environment(profile_dir, clusters):
    cluster = corral.Cluster(n=1, profile_dir=profile_dir, cluster_id="env")
    clusters.append(cluster)
    rc = cluster.start_and_connect_sync()
    (pid,) = cluster.engine_pids()
    proc = psutil.Process(pid)
    info = json.loads(proc.environ()["IPP_CONNECTION_INFO"])
    assert info == json.loads(cluster.engine_file.read_text())
    assert "--file" not in proc.cmdline()
    assert rc[:].apply_sync(lambda: 6) == [6]


def test_launchers_and_controllers_by_name():
    with pytest.raises(ValueError, match="unknown engine launcher 'nosuch'"):
        corral.Cluster(engines="nosuch")
    with pytest.raises(ValueError, match="unknown controller launcher 'nosuch'"):
        corral.Cluster(controller="nosuch")
    assert corral.Cluster(controller="ssh", shutdown_atexit=False).controller_launcher == "ssh"
    from corral.cluster.launcher import find_engine_launcher
    from corral.cluster.local_launcher import LocalEngineSetLauncher
    from corral.cluster.mpi import MPIEngineSetLauncher

    assert find_engine_launcher("Local") is LocalEngineSetLauncher
    assert find_engine_launcher("mpi") is MPIEngineSetLauncher
    assert find_engine_launcher("mpiexec") is MPIEngineSetLauncher


def test_controller_reuse_ports_and_location(profile_dir, clusters):
    """`--reuse`: a controller restarted on the same files has the same key and ports, so a
    client holding the old file connects; `--location` is written into the files."""
    cluster = corral.Cluster(n=1, profile_dir=profile_dir, cluster_id="re",
                             controller_args=["--reuse"], controller_location="head.example")
    clusters.append(cluster)
    rc = cluster.start_and_connect_sync()
    rc.close()
    before = json.loads(cluster.client_file.read_text())
    assert before["location"] == "head.example"
    cluster.stop_cluster_sync()
    assert cluster.client_file.exists(), "--reuse leaves the connection files"
    rc = cluster.start_and_connect_sync()
    assert json.loads(cluster.client_file.read_text()) == before
    assert rc[:].apply_sync(lambda: 8) == [8]
    rc.close()
    cluster.stop_cluster_sync()
    cluster.client_file.unlink()
    cluster.engine_file.unlink()

    # Below Linux's ephemeral range (32768-), where random ports come from.
    base = 20000 + (os.getpid() * 15) % 10000
    fixed = list(range(base, base + 15))
    pinned = corral.Cluster(n=1, profile_dir=profile_dir, cluster_id="ports",
                            controller_args=["--ports", f"{fixed[0]}-{fixed[-1]}"])
    clusters.append(pinned)
    rc = pinned.start_and_connect_sync()
    info = json.loads(pinned.client_file.read_text())
    assert info["registration"] == fixed[0]
    assert {info[k] for k in ("mux", "control", "task", "iopub", "notification", "broadcast")} <= set(fixed)
    assert rc[:].apply_sync(lambda: 9) == [9]
