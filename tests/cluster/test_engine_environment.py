"""`corral engine` finds its controller the way ipyparallel's launchers tell `ipengine`:
through `$IPP_CONNECTION_INFO` (the engine connection file's JSON), or `$IPP_PROFILE_DIR` and
`$IPP_CLUSTER_ID`, so a stock `ipp.Cluster` can launch corral engines."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import corral
from cluster_processes import Processes, start_corral_controller, wait_for


@pytest.fixture
def controller(tmp_path):
    (tmp_path / "log").mkdir()
    procs = Processes(tmp_path / "log")
    profile = tmp_path / "profile"
    start_corral_controller(procs, profile)
    client = corral.Client(profile_dir=profile)
    yield procs, profile, client
    client.close()
    procs.stop_all()


def _engine(procs, name, env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPP_")}
    # HOME and TMPDIR in the test's folder: no default profile to fall back on, and the
    # engine's temporary connection file lands where the test can look for it.
    env.update(env_extra, HOME=str(tmp_path), TMPDIR=str(tmp_path))
    # No profile options: everything comes from the environment.
    log = open(procs.logdir / f"{name}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "engine"], env=env, cwd=tmp_path,
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    procs.procs[name] = proc
    return proc


def test_connection_info_from_the_environment(controller, tmp_path):
    procs, profile, client = controller
    info = (profile / "security" / "ipcontroller-engine.json").read_text()
    _engine(procs, "engine-env", {"IPP_CONNECTION_INFO": info}, tmp_path)
    wait_for(lambda: len(client.ids) == 1, 30, "the engine to register")
    assert client[:].apply_sync(lambda: 3) == [3]
    # The temporary file that carried the key is gone once the engine connected.
    assert not list(tmp_path.glob("corral-engine-*"))


def test_profile_dir_and_cluster_id_from_the_environment(controller, tmp_path):
    procs, profile, client = controller
    _engine(procs, "engine-profile", {"IPP_PROFILE_DIR": str(profile)}, tmp_path)
    wait_for(lambda: len(client.ids) == 1, 30, "the engine to register")


def test_bad_connection_info_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "corral", "engine"],
        env={**os.environ, "IPP_CONNECTION_INFO": "{not json"},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "IPP_CONNECTION_INFO is not JSON" in proc.stderr
