"""CurveZMQ encryption (ipyparallel's `enable_curve`) on an all-corral cluster: real
controller and engine processes on 127.0.0.1, and clients that lack the key or hold a
wrong one, which are told why instead of hanging, while the cluster serves on."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import corral
from cluster_processes import wait_for


def publish_loop():
    import time

    from corral.datapub import publish_data

    for i in range(5):
        publish_data(dict(i=i, tag="curve"))
        time.sleep(0.05)
    return "done"


def _file_with(cluster, tmp_path, name: str, **changes) -> str:
    """A copy of the cluster's client file with `changes` (None deletes a field)."""
    info = json.loads(cluster.client_file.read_text())
    for key, value in changes.items():
        if value is None:
            info.pop(key, None)
        else:
            info[key] = value
    path = tmp_path / name
    path.write_text(json.dumps(info))
    return str(path)


def _still_serves(client, n: int) -> None:
    assert client[:].apply_sync(lambda: 6 * 7) == [42] * n


def test_an_all_corral_cluster_with_curve_runs_the_data_publication_flow(start_cluster):
    cluster, c = start_cluster(2, enable_curve=True)
    for path in (cluster.client_file, cluster.engine_file):
        assert len(json.loads(path.read_text())["curve_serverkey"]) == 40, path
    assert sorted(c.ids) == [0, 1]
    ar = c[:].apply_async(publish_loop)
    assert ar.get(timeout=30) == ["done", "done"]
    assert ar.data == [{"i": 4, "tag": "curve"}] * 2
    lview = c.load_balanced_view()
    assert sorted(lview.map_sync(lambda x: x + 1, range(6))) == [1, 2, 3, 4, 5, 6]
    # The controller serves CURVE peers only (see the tests below and
    # crates/controller/tests/curve.rs), so every party here used CURVE.


def test_curve_is_off_by_default(start_cluster):
    cluster, c = start_cluster(1)
    assert json.loads(cluster.client_file.read_text())["curve_serverkey"] is None
    _still_serves(c, 1)


def test_a_client_without_the_key_is_told_why_and_the_cluster_serves_on(start_cluster, tmp_path):
    cluster, c = start_cluster(1, enable_curve=True)
    no_key = _file_with(cluster, tmp_path, "no-key.json", curve_serverkey=None)
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="uses CurveZMQ encryption.*no curve_serverkey"):
        corral.Client(url_file=no_key, timeout=20)
    assert time.monotonic() - started < 15, "the mismatch is reported, not waited out"
    _still_serves(c, 1)


def test_the_server_key_may_come_from_the_environment(start_cluster, tmp_path, monkeypatch):
    """As ipyparallel's client does: IPP_CURVE_SERVERKEY when the file has no key."""
    cluster, c = start_cluster(1, enable_curve=True)
    server_key = json.loads(cluster.client_file.read_text())["curve_serverkey"]
    no_key = _file_with(cluster, tmp_path, "no-key.json", curve_serverkey=None)
    monkeypatch.setenv("IPP_CURVE_SERVERKEY", server_key)
    other = corral.Client(url_file=no_key, timeout=20)
    try:
        assert other[:].apply_sync(lambda: "via env") == ["via env"]
    finally:
        other.close()


def test_a_client_with_a_wrong_server_key_is_told_why(start_cluster, tmp_path):
    zmq = pytest.importorskip("zmq")
    cluster, c = start_cluster(1, enable_curve=True)
    other_public, _ = zmq.curve_keypair()
    wrong = _file_with(cluster, tmp_path, "wrong-key.json", curve_serverkey=other_public.decode())
    with pytest.raises(ConnectionError, match="probably not that controller's key"):
        corral.Client(url_file=wrong, timeout=3)
    _still_serves(c, 1)


def test_a_curve_client_is_told_when_the_controller_has_no_curve(start_cluster, tmp_path):
    zmq = pytest.importorskip("zmq")
    cluster, c = start_cluster(1)
    public, _ = zmq.curve_keypair()
    curved = _file_with(cluster, tmp_path, "curved.json", curve_serverkey=public.decode())
    with pytest.raises(ConnectionError, match="controller does not use CurveZMQ"):
        corral.Client(url_file=curved, timeout=20)
    _still_serves(c, 1)


@pytest.mark.parametrize("server_key", ["none", "wrong"])
def test_a_corral_engine_without_the_right_key_says_why_at_once(start_cluster, tmp_path, server_key):
    zmq = pytest.importorskip("zmq")
    cluster, c = start_cluster(1, enable_curve=True)
    info = json.loads(cluster.engine_file.read_text())
    info["curve_serverkey"] = None if server_key == "none" else zmq.curve_keypair()[0].decode()
    engine_file = tmp_path / "engine.json"
    engine_file.write_text(json.dumps(info))
    started = time.monotonic()
    engine = subprocess.run(
        [sys.executable, "-m", "corral", "engine", "--file", str(engine_file), "--timeout", "30"],
        capture_output=True, text=True, timeout=90,
    )
    assert engine.returncode == 1, engine.stderr
    expected = "disagree on security" if server_key == "none" else "closed every CurveZMQ handshake"
    assert expected in engine.stderr, engine.stderr
    assert time.monotonic() - started < 30, "the mismatch is reported, not waited out"
    assert c.ids == [0]
    _still_serves(c, 1)


def test_a_stock_client_without_the_key_times_out_and_the_cluster_serves_on(start_cluster, tmp_path):
    ipp = pytest.importorskip("ipyparallel")
    cluster, c = start_cluster(1, enable_curve=True)
    no_key = _file_with(cluster, tmp_path, "no-key.json", curve_serverkey=None)
    with pytest.raises(TimeoutError):
        ipp.Client(no_key, timeout=2)
    _still_serves(c, 1)
    assert cluster.controller.running()


def test_cluster_start_enable_curve_from_the_shell(tmp_path):
    profile = tmp_path / "profile"
    cmd = [sys.executable, "-m", "corral", "cluster"]
    where = ["--profile-dir", str(profile), "--cluster-id", "shell"]
    started = subprocess.run(
        [*cmd, "start", "-n", "1", "--daemonize", "--enable-curve", "--timeout", "60", *where],
        capture_output=True, text=True, timeout=120,
    )
    try:
        assert started.returncode == 0, started.stderr
        client_file = profile / "security" / "ipcontroller-shell-client.json"
        assert json.loads(client_file.read_text())["curve_serverkey"]
        c = corral.Client(url_file=str(client_file), timeout=20)
        try:
            wait_for(lambda: len(c.ids) == 1, 30, "the engine")
            _still_serves(c, 1)
        finally:
            c.close()
    finally:
        stopped = subprocess.run([*cmd, "stop", *where], capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
