"""`corral cluster start --daemonize` / `corral cluster stop` and `corral.Cluster`."""

import subprocess
import sys

import corral


def corral_cmd(*args, timeout=90):
    return subprocess.run(
        [sys.executable, "-m", "corral", *args], capture_output=True, text=True, timeout=timeout
    )


def test_cluster_start_daemonize_then_stop(tmp_path):
    profile = str(tmp_path / "profile")
    started = corral_cmd("cluster", "start", "-n", "2", "--daemonize", "--profile-dir", profile)
    try:
        assert started.returncode == 0, started.stderr
        c = corral.Client(profile_dir=profile)
        c.wait_for_engines(2, timeout=30)
        assert c[:].apply_sync(lambda: 5) == [5, 5]
        c.close()
    finally:
        stopped = corral_cmd("cluster", "stop", "--profile-dir", profile)
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "profile" / "security" / "ipcontroller-client.json").exists()
    again = corral_cmd("cluster", "stop", "--profile-dir", profile)
    assert again.returncode != 0 and "no running cluster" in again.stderr


def test_cluster_with_cluster_id_uses_ipyparallel_file_names(tmp_path):
    cluster = corral.Cluster(n=1, profile_dir=tmp_path, cluster_id="abc")
    with cluster as client:
        assert (tmp_path / "security" / "ipcontroller-abc-client.json").exists()
        assert (tmp_path / "security" / "ipcontroller-abc-engine.json").exists()
        assert client.ids == [0]
        mode = (tmp_path / "security" / "ipcontroller-abc-client.json").stat().st_mode & 0o777
        assert mode == 0o600
    assert not (tmp_path / "security" / "ipcontroller-abc-client.json").exists()


def test_usage_without_command():
    out = corral_cmd()
    assert out.returncode == 2 and "cluster" in out.stderr
