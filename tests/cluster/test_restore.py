"""Durable task records: the controller keeps finished tasks in its SQLite database, is
SIGKILLed, and `corral controller --restore` brings back every finished result, its output
and its published data for a new client, on the same key and ports; new engines register
and work beside the restored records."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time

import cloudpickle
import psutil

import corral

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def publish_and_return(i):
    import numpy as np

    from corral.datapub import publish_data

    print(f"task {i} says hello")
    publish_data({"step": 0, "field": np.full(4, i, dtype=np.float64)})
    publish_data({"step": 1, "field": np.full(4, 10 * i, dtype=np.float64)})
    return i * i


def _wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _wait_stored(db_file, msg_ids, timeout=30.0):
    """Until the database file holds every msg_id (the writer commits in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        stored = set()
        if db_file.exists():
            with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True) as db:
                try:
                    stored = {row[0] for row in db.execute("SELECT msg_id FROM tasks")}
                except sqlite3.OperationalError:
                    pass  # the table is not there yet
        if set(msg_ids) <= stored:
            return
        assert time.monotonic() < deadline, f"not in {db_file} after {timeout} s: {set(msg_ids) - stored}"
        time.sleep(0.05)


def _wait_gone(pid, timeout=15.0):
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"process {pid} still alive"
        time.sleep(0.05)


def test_a_sigkilled_controller_restored_keeps_every_finished_result_and_its_data(tmp_path):
    profile_dir = tmp_path / "profile_default"
    cluster = corral.Cluster(n=2, profile_dir=profile_dir, cluster_id="rs",
                             controller_args=["--reuse"])
    try:
        rc = cluster.start_and_connect_sync()
        ars = [rc[i % 2].apply_async(publish_and_return, i) for i in range(6)]
        assert [ar.get(timeout=60) for ar in ars] == [i * i for i in range(6)]
        for ar in ars:  # the store catches up a few ms after the client (copies to the hub)
            _wait_until(lambda: (ar.data_meta["seq"] or 0) >= ar.data_meta["received_updates"])
        msg_ids = [ar.msg_ids[0] for ar in ars]
        expected = {m: rc.get_result(m, block=True) for m in msg_ids}
        expected = {m: (h.get(timeout=10), h.data, h.stdout, h.data_history) for m, h in expected.items()}
        engine_ids = sorted(rc.ids)
        rc.close()

        db_file = profile_dir / "db" / "corral-tasks-rs.sqlite"
        _wait_stored(db_file, msg_ids)
        # A record changed after it was first stored (late data) is written again in the
        # writer's next batch (every 50 ms): give it a few.
        time.sleep(0.5)
        pid = cluster.controller.pid
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
        # Engines notice the controller is gone and exit on their own.
        for pid in cluster.engine_pids():
            _wait_gone(pid, timeout=60)

        cluster.controller_args = ["--restore"]
        cluster.start_controller_sync()
        other = corral.Client(url_file=str(cluster.client_file), timeout=10)
        try:
            for m in msg_ids:
                h = other.get_result(m, block=True)
                result, data, stdout, history = expected[m]
                assert h.get(timeout=10) == result
                assert h.stdout == stdout and "says hello" in stdout
                assert data["step"] == 1
                assert h.data["step"] == 1 and (h.data["field"] == data["field"]).all()
                restored = h.data_history
                # (The engine sends only the latest of quick updates: compare, not count.)
                assert len(restored) == len(history) >= 1
                for was, now in zip(history, restored):
                    assert (now["seq"], now["published"], now["received"]) == (
                        was["seq"], was["published"], was["received"])
                    assert (now["data"]["field"] == was["data"]["field"]).all()
            (rec,) = other.db_query({"msg_id": msg_ids[0]}, keys=["completed", "result_buffers"])
            assert rec["completed"] is not None and rec["result_buffers"]
            assert set(msg_ids) <= set(other.hub_history())

            # New engines register with the restored controller and get the ids back.
            cluster.start_engines_sync()
            deadline = time.monotonic() + 60
            while sorted(other.ids) != engine_ids:
                assert time.monotonic() < deadline, other.ids
                time.sleep(0.1)
            assert other[:].apply_sync(lambda: 3) == [3] * len(engine_ids)
        finally:
            other.close()
    finally:
        cluster.stop_cluster_sync()
        for f in (cluster.client_file, cluster.engine_file):
            f.unlink(missing_ok=True)


def test_db_memory_keeps_no_file_and_restore_from_nothing_starts_empty(tmp_path):
    profile_dir = tmp_path / "profile_default"
    cluster = corral.Cluster(n=1, profile_dir=profile_dir, cluster_id="mem",
                             controller_args=["--db", "memory"])
    try:
        rc = cluster.start_and_connect_sync()
        assert rc[:].apply_sync(lambda: 5) == [5]
        rc.close()
    finally:
        cluster.stop_cluster_sync()
    assert not (profile_dir / "db").exists()

    fresh = corral.Cluster(n=1, profile_dir=profile_dir, cluster_id="new",
                           controller_args=["--restore"])
    try:
        rc = fresh.start_and_connect_sync()
        assert rc.hub_history() == []
        assert rc[:].apply_sync(lambda: 6) == [6]
        rc.close()
    finally:
        fresh.stop_cluster_sync()
        for f in (fresh.client_file, fresh.engine_file):
            f.unlink(missing_ok=True)
