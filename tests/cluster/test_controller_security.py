"""The controller command refuses an empty cluster key unless asked, and says how."""

import json
import os
import signal
import subprocess
import sys
import time


def _controller(tmp_path, extra_env, *args):
    env = {k: v for k, v in os.environ.items() if k != "CORRAL_INSECURE"}
    env.update({"IPP_SESSION_KEY": "", **extra_env})
    cmd = [sys.executable, "-m", "corral", "controller", "--profile-dir", str(tmp_path), *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_an_empty_key_is_refused_with_a_way_to_opt_in(tmp_path):
    proc = _controller(tmp_path, {})
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()  # the controller this test started
    assert proc.returncode != 0
    assert "--insecure" in err and "CORRAL_INSECURE=1" in err, err
    assert not (tmp_path / "security" / "ipcontroller-client.json").exists()


def test_an_empty_key_runs_when_opted_in_and_warns(tmp_path):
    client_file = tmp_path / "security" / "ipcontroller-client.json"
    for env, args in [({"CORRAL_INSECURE": "1"}, ()), ({}, ("--insecure",))]:
        proc = _controller(tmp_path, env, *args)
        try:
            deadline = time.monotonic() + 60
            while not client_file.exists() and time.monotonic() < deadline:
                assert proc.poll() is None, proc.communicate()[1]
                time.sleep(0.05)
            assert json.loads(client_file.read_text())["key"] == ""
        finally:
            proc.send_signal(signal.SIGTERM)  # the controller this test started
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
        assert "INSECURE" in err, err
        assert not client_file.exists()
