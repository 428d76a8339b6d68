"""`corral cluster list|clean|engines|stop` on daemonized clusters: a SIGKILLed controller
is listed as dead and cleaned, and stop leaves no process behind (checked with psutil)."""

import json
import os
import signal
import subprocess
import sys

import psutil

import corral

from cluster_processes import wait_for


def corral_cmd(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _recorded_pids(cluster_file):
    record = json.loads(cluster_file.read_text())
    pids = [record["controller"]["state"]["pid"]]
    for engine_set in record["engines"]["sets"].values():
        pids += [p["pid"] for p in engine_set.get("processes", [])]
        if engine_set.get("mpiexec"):
            pids += [engine_set["mpiexec"]["pid"], *(r["pid"] for r in engine_set["ranks"])]
    return record, pids


def _row(listing, cluster_id):
    rows = [line.split() for line in listing.splitlines()[1:]]
    return next((r for r in rows if r[1] == cluster_id), None)


def test_list_shows_a_killed_controller_and_clean_removes_its_files(tmp_path):
    ipython_dir = tmp_path / "ipython"
    profile = ipython_dir / "profile_default"
    env = dict(os.environ, IPYTHONDIR=str(ipython_dir))
    started = corral_cmd("cluster", "start", "-n", "2", "--daemonize", "--cluster-id", "k", env=env)
    assert started.returncode == 0, started.stderr
    other = corral_cmd("cluster", "start", "-n", "1", "--daemonize", "--cluster-id", "alive", env=env)
    assert other.returncode == 0, other.stderr
    cluster_file = profile / "security" / "cluster-k.json"
    record, pids = _recorded_pids(cluster_file)
    _, other_pids = _recorded_pids(profile / "security" / "cluster-alive.json")
    try:
        listing = corral_cmd("cluster", "list", env=env).stdout
        assert _row(listing, "k")[:4] == ["default", "k", "running", "2"], listing
        os.kill(pids[0], signal.SIGKILL)  # the controller
        wait_for(lambda: not _alive(pids[0]), 10, "the controller to die")
        listing = corral_cmd("cluster", "list", env=env).stdout
        assert _row(listing, "k")[2] in ("controller", "dead"), listing  # "controller died" or "dead"
        assert _row(listing, "alive")[2] == "running"

        cleaned = corral_cmd("cluster", "clean", env=env)
        assert cleaned.returncode == 0, cleaned.stderr
        assert str(cluster_file) in cleaned.stdout
        assert not cluster_file.exists()
        assert not (profile / "security" / "ipcontroller-k-client.json").exists()
        assert not list((profile / "log").glob("corral-*-k-*.log"))
        wait_for(lambda: not any(_alive(p) for p in pids), 15, "the orphaned engines to stop")
        assert _row(corral_cmd("cluster", "list", env=env).stdout, "k") is None
        assert all(_alive(p) for p in other_pids), "clean keeps a running cluster"
        assert (profile / "security" / "cluster-alive.json").exists()
    finally:
        corral_cmd("cluster", "stop", "--cluster-id", "alive", env=env)
        for pid in pids + other_pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(_alive(p) for p in other_pids), 15, "stop to end every process")


def test_engines_adds_a_set_and_stop_leaves_no_process(tmp_path):
    profile = str(tmp_path / "profile")
    started = corral_cmd("cluster", "start", "-n", "1", "--daemonize", "--profile-dir", profile)
    assert started.returncode == 0, started.stderr
    more = corral_cmd("cluster", "engines", "-n", "2", "--daemonize", "--profile-dir", profile)
    assert more.returncode == 0, more.stderr
    record, pids = _recorded_pids(tmp_path / "profile" / "security" / "cluster-.json")
    try:
        assert len(record["engines"]["sets"]) == 2 and len(pids) == 4
        c = corral.Client(profile_dir=profile)
        c.wait_for_engines(3, timeout=60)
        assert c[:].apply_sync(lambda: 1) == [1, 1, 1]
        c.close()
    finally:
        stopped = corral_cmd("cluster", "stop", "--profile-dir", profile)
    assert stopped.returncode == 0, stopped.stderr
    assert "3 engines in 2 engine set(s)" in stopped.stdout
    assert not any(_alive(p) for p in pids)
    assert not (tmp_path / "profile" / "security" / "cluster-.json").exists()


def test_engines_without_a_cluster_says_what_to_do(tmp_path):
    out = corral_cmd("cluster", "engines", "-n", "1", "--profile-dir", str(tmp_path))
    assert out.returncode == 1 and "corral cluster start" in out.stderr


def test_bad_engine_option_is_refused_with_a_message(tmp_path):
    out = corral_cmd("cluster", "start", "--engine-option", "oops", "--profile-dir", str(tmp_path))
    assert out.returncode == 2 and "KEY=VALUE" in out.stderr
