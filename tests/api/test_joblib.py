"""``view.register_joblib_backend()``: ``joblib.Parallel(backend='ipyparallel')`` on corral
engines."""

import os
import signal
import time

import pytest

joblib = pytest.importorskip("joblib")

from corral.error import RemoteError  # noqa: E402


def pid_and_square(x):
    import os

    return os.getpid(), x * x


def fail_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


def test_parallel_with_4_jobs_runs_on_the_engines(client4):
    view = client4.load_balanced_view()
    view.register_joblib_backend()
    engine_pids = set(client4[:].apply_sync(os.getpid))
    out = joblib.Parallel(backend="ipyparallel", n_jobs=4)(
        joblib.delayed(pid_and_square)(i) for i in range(40))
    assert [sq for _, sq in out] == [i * i for i in range(40)]
    pids = {pid for pid, _ in out}
    assert pids <= engine_pids and os.getpid() not in pids
    assert len(pids) > 1, "the batches were spread over several engines"


def test_parallel_config_context_and_errors(client4):
    client4[[0, 1]].register_joblib_backend(name="corral-direct")
    with joblib.parallel_config(backend="corral-direct"):
        out = joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(6))
        assert out == list(range(6))
        with pytest.raises((ValueError, RemoteError)):
            joblib.Parallel(n_jobs=2)(joblib.delayed(fail_on_three)(i) for i in range(6))


def test_top_level_backend_uses_the_running_default_cluster(tmp_path, monkeypatch):
    """``corral.register_joblib_backend()`` (no view), as ipyparallel's top-level one."""
    import corral

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    cluster = corral.Cluster(n=2, profile_dir=tmp_path / "ipython" / "profile_default",
                             cluster_id="", engine_timeout=60)
    client = cluster.start_and_connect_sync()
    try:
        engine_pids = set(client[:].apply_sync(os.getpid))
        corral.register_joblib_backend(name="corral-default")
        out = joblib.Parallel(backend="corral-default")(
            joblib.delayed(pid_and_square)(i) for i in range(8))
        assert [sq for _, sq in out] == [i * i for i in range(8)]
        assert {pid for pid, _ in out} <= engine_pids
        assert client.ids == [0, 1], "the running cluster was used, not a new one"
    finally:
        client.close()
        cluster.stop_cluster_sync()


def test_top_level_backend_starts_and_stops_a_cluster_when_none_runs(tmp_path, monkeypatch):
    import corral

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    corral.register_joblib_backend(name="corral-own")
    out = joblib.Parallel(backend="corral-own")(joblib.delayed(abs)(-i) for i in range(6))
    assert out == list(range(6))
    security = tmp_path / "ipython" / "profile_default" / "security"
    assert not list(security.glob("ipcontroller-*client.json")), "the cluster it started is stopped"


def test_a_cluster_started_for_a_parallel_that_never_runs_is_stopped_at_exit(tmp_path):
    """``Parallel(backend=...)`` starts the cluster at once (ipyparallel's test checks the
    backend's view right after); never run and dropped, it is stopped when the process
    exits (the controller's command line names the profile; its engines follow it)."""
    import subprocess
    import sys

    code = ("import gc\n"
            "from corral.client.joblib import DefaultClusterBackend\n"
            "backend = DefaultClusterBackend()\n"
            "print(len(backend._client.ids))\n"
            "del backend\n"  # dropped, as a Parallel that goes out of scope
            "gc.collect()\n")
    env = dict(os.environ, IPYTHONDIR=str(tmp_path / "ipython"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1
    profile = str(tmp_path / "ipython")
    deadline = time.monotonic() + 30
    while _processes_using(profile) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _processes_using(profile)
    for pid in left:  # this test's own controller: its engines exit without it
        os.kill(pid, signal.SIGKILL)
    assert not left, "the cluster it started was left running"


def _processes_using(path: str) -> list[int]:
    """Pids of processes whose command line names ``path`` (the cluster's profile)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if path.encode() in f.read():
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found
