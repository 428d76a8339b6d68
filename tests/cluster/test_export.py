"""`corral export MSG_ID --to FILE.npz`: a task's published history from the controller
into a file numpy opens alone (round trip through the real command and controller)."""

from __future__ import annotations

import subprocess
import sys

import cloudpickle
import numpy as np
import pytest

import corral

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def simulate(steps):
    import numpy as np

    from corral.datapub import publish_data

    for step in range(steps):
        publish_data({"step": step, "u": np.arange(3.0) * step, "note": f"at {step}" if step % 2 else 7})
    return "done"


@pytest.fixture
def cluster(tmp_path):
    c = corral.Cluster(n=2, profile_dir=tmp_path / "profile_default", cluster_id="ex")
    yield c
    c.stop_cluster_sync()


def test_export_writes_every_kept_update_per_engine_for_numpy(cluster, tmp_path):
    rc = cluster.start_and_connect_sync()
    ar = rc[:].apply_async(simulate, 4)
    assert ar.get(timeout=60) == ["done", "done"]
    msg_id = ar.msg_ids[0]
    out = tmp_path / "run.npz"
    done = subprocess.run(
        [sys.executable, "-m", "corral", "export", msg_id, "--to", str(out),
         "--url-file", str(cluster.client_file)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout

    # What the controller holds (the engine may have sent only the latest of quick
    # updates, so compare with that rather than count).
    history = rc.get_result(msg_id).data_history
    assert history and history[-1]["data"]["step"] == 3
    with np.load(out) as f:
        assert list(f["seq"]) == [u["seq"] for u in history]
        assert list(f["engine_id"]) == [u["engine_id"] for u in history]
        assert list(f["engine_uuid"]) == [u["engine_uuid"] for u in history]
        assert f["published"].dtype == np.dtype("datetime64[us]")
        assert not np.isnat(f["published"]).any() and not np.isnat(f["received"]).any()
        assert list(f["keys"]) == ["step,u,note"] * len(history)
        assert list(f["step"]) == [u["data"]["step"] for u in history]
        assert list(f["step.rows"]) == list(range(len(history)))
        np.testing.assert_array_equal(f["u"], np.stack([u["data"]["u"] for u in history]))

    # The same through the Python API, and what a user is told on mistakes.
    from corral.export import export

    path = export(rc, ar.msg_ids[1], tmp_path / "other.npz")
    with np.load(path) as f:
        assert f["step"][-1] == 3
    with pytest.raises(ValueError, match=".npz"):
        export(rc, msg_id, tmp_path / "run.csv")
    with pytest.raises(LookupError, match="no published data"):
        export(rc, "no-such-task", tmp_path / "none.npz")
    rc.close()

    bad = subprocess.run(
        [sys.executable, "-m", "corral", "export", "no-such-task", "--to", str(tmp_path / "x.npz"),
         "--url-file", str(cluster.client_file)],
        capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 1 and "no published data" in bad.stderr


def test_values_of_different_kinds_are_kept_one_array_per_update():
    from datetime import datetime, timezone

    from corral.export import arrays

    when = datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=timezone.utc)
    updates = [
        {"seq": 1, "engine_id": 0, "engine_uuid": "e", "published": when, "received": None,
         "data": {"note": 7, "x": np.zeros(2)}},
        {"seq": 2, "engine_id": None, "engine_uuid": "e", "published": when, "received": when,
         "data": {"note": "at 1", "x": np.ones(3)}},
    ]
    out = arrays(updates)
    assert list(out["engine_id"]) == [0, -1]
    assert out["published"][0] == np.datetime64("2026-01-02T03:04:05.000600")
    assert np.isnat(out["received"][0])
    assert out["note.0"] == 7 and str(out["note.1"]) == "at 1"
    np.testing.assert_array_equal(out["x.1"], np.ones(3))
    assert "x" not in out and "note" not in out
    with pytest.raises(ValueError, match="clashes"):
        arrays([{**updates[0], "data": {"seq": 1}}])
