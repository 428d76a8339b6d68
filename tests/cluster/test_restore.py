"""Durable task records: the controller keeps finished tasks in its SQLite database, is
SIGKILLed, and `corral controller --restore` brings back every finished result, its output
and its published data for a new client, on the same key and ports; new engines register
and work beside the restored records."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time

import cloudpickle
import psutil
import pytest

import corral
from cluster_processes import corral_engine_argv, stock_engine_argv, wait_for

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
    # (--restart-grace 0: these engines exit as soon as the controller is gone, as with a
    # controller not meant to be restarted; the test below keeps its engines.)
    cluster = corral.Cluster(n=2, profile_dir=profile_dir, cluster_id="rs",
                             controller_args=["--reuse", "--restart-grace", "0"])
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

        cluster.controller_args = ["--restore", "--restore-timeout", "2"]
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

            # New engines register with the restored controller under fresh ids: the old
            # engines' ids are restored with them and never handed out again.
            cluster.start_engines_sync()
            fresh = [i + len(engine_ids) for i in engine_ids]
            deadline = time.monotonic() + 60
            while sorted(other.ids) != fresh:
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


# -- engines survive a controller restart --------------------------------------------------

def _engine_pid():
    import os

    return os.getpid()


def _slow_pid(seconds):
    import os
    import time

    time.sleep(seconds)
    return os.getpid()


def _start_controller(procs, name, profile_dir, *args):
    return procs.start(name, [sys.executable, "-m", "corral", "controller", "--profile-dir",
                              str(profile_dir), "--ip", "127.0.0.1", "--log-level", "info", *args])


def _wait_for_files_newer_than(profile_dir, since_ns, timeout=30):
    files = [profile_dir / "security" / f"ipcontroller-{r}.json" for r in ("client", "engine")]
    wait_for(lambda: all(f.exists() and f.stat().st_mtime_ns > since_ns for f in files),
             timeout, "connection files")


def _wait_ids(client, ids, timeout=30):
    deadline = time.monotonic() + timeout
    while sorted(client.ids) != ids:
        assert time.monotonic() < deadline, f"engine ids {sorted(client.ids)}, expected {ids}"
        time.sleep(0.05)


def _sigkill_controller(procs):
    proc = procs.procs["controller"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(15)


def test_engines_keep_their_ids_across_a_sigkilled_and_restored_controller(tmp_path, procs):
    """Three engines, the controller SIGKILLed while one runs a task, one engine killed
    while the controller is away: `--restore` takes the two survivors back under their ids
    without a new registration (the same processes), receives the running task's result,
    unregisters the dead engine, and gives a new engine a fresh id."""
    profile_dir = tmp_path / "profile"
    profile_dir.mkdir()
    _start_controller(procs, "controller", profile_dir, "--reuse")
    _wait_for_files_newer_than(profile_dir, 0)
    engines = [procs.start(f"engine{i}", corral_engine_argv(profile_dir)) for i in range(3)]
    rc = corral.Client(profile_dir=profile_dir, timeout=30)
    try:
        rc.wait_for_engines(3, timeout=60)
        assert sorted(rc.ids) == [0, 1, 2]
        pids = {i: rc[i].apply_sync(_engine_pid) for i in rc.ids}
        assert sorted(pids.values()) == sorted(p.pid for p in engines)
        # A task running through the restart, and one stranded on an engine that dies.
        running = rc[0].apply_async(_slow_pid, 3)
        doomed = rc[2].apply_async(_slow_pid, 600)
        msg_ids = [running.msg_ids[0], doomed.msg_ids[0]]
        # Unfinished tasks reach the task database after half a second.
        _wait_stored(profile_dir / "db" / "corral-tasks.sqlite", msg_ids)
    finally:
        rc.close()
    state = json.loads((profile_dir / "log" / "engines.json").read_text())
    assert state["engines"] == {str(i): state["engines"][str(i)] for i in (0, 1, 2)}

    _sigkill_controller(procs)
    # While it is away, engine 2 dies too.
    dead_pid = pids[2]
    os.kill(dead_pid, signal.SIGKILL)
    _wait_gone(dead_pid)
    time.sleep(4)  # longer than an engine's own 3 s grace: the controller's grace holds them
    assert all(psutil.pid_exists(pids[i]) for i in (0, 1)), "engines waited for the controller"

    since = time.time_ns()
    _start_controller(procs, "controller", profile_dir, "--restore", "--restore-timeout", "3")
    _wait_for_files_newer_than(profile_dir, since)
    other = corral.Client(profile_dir=profile_dir, timeout=30)
    try:
        _wait_ids(other, [0, 1])
        assert {i: other[i].apply_sync(_engine_pid) for i in (0, 1)} == {0: pids[0], 1: pids[1]}
        # The task that ran through the restart finished and its result is there.
        assert other.get_result(msg_ids[0], block=True).get(timeout=30) == pids[0]
        # The dead engine's task fails instead of hanging: the task database keeps
        # unfinished tasks too, and engine 2 does not come back within the restore
        # timeout, so its task becomes an EngineError.
        with pytest.raises(corral.error.RemoteError, match="Engine 2 died"):
            other.get_result(msg_ids[1], block=True).get(timeout=30)
        assert other[:].apply_sync(lambda: 7) == [7, 7]
        lview = other.load_balanced_view()
        assert sorted(set(lview.map_sync(lambda x: __import__("os").getpid(), range(8)))) <= sorted(
            [pids[0], pids[1]])
        # A new engine does not take a restored or a dead engine's id.
        procs.start("engine3", corral_engine_argv(profile_dir))
        _wait_ids(other, [0, 1, 3])
        # Engine 2 is unregistered once the restore timeout (3 s) passed without a heartbeat.
        wait_for(lambda: "did not come back" in procs.log("controller"), 30,
                 "the restored controller to give up on engine 2")
        state = json.loads((profile_dir / "log" / "engines.json").read_text())
        assert sorted(state["engines"]) == ["0", "1", "3"] and state["next_id"] == 4
    finally:
        other.close()
    log = procs.log("controller")
    assert "restored engine is back" in log and "did not come back" in log


def test_stock_engines_are_taken_back_by_a_restored_controller(tmp_path, procs):
    """Stock ipengines wait 50 missed heartbeats for a controller (about 3 min): a corral
    controller restored meanwhile takes them back under their ids."""
    profile_dir = tmp_path / "profile"
    profile_dir.mkdir()
    _start_controller(procs, "controller", profile_dir, "--reuse")
    _wait_for_files_newer_than(profile_dir, 0)
    stock = [procs.start(f"stock{i}", stock_engine_argv(profile_dir)) for i in range(2)]
    rc = corral.Client(profile_dir=profile_dir, timeout=30)
    try:
        rc.wait_for_engines(2, timeout=60)
        pids = {i: rc[i].apply_sync(_engine_pid) for i in sorted(rc.ids)}
        assert sorted(pids.values()) == sorted(p.pid for p in stock)
    finally:
        rc.close()
    _sigkill_controller(procs)
    time.sleep(1)
    since = time.time_ns()
    _start_controller(procs, "controller", profile_dir, "--restore", "--restore-timeout", "10")
    _wait_for_files_newer_than(profile_dir, since)
    other = corral.Client(profile_dir=profile_dir, timeout=30)
    try:
        _wait_ids(other, sorted(pids))
        assert {i: other[i].apply_sync(_engine_pid) for i in pids} == pids
    finally:
        other.close()


def test_a_task_still_in_the_scheduler_when_the_controller_died_fails_after_restore(tmp_path,
                                                                                    procs):
    """A load-balanced task waiting in the scheduler (its one engine busy) when the
    controller is SIGKILLed: the restored controller does not know the scheduler's queue,
    so the task becomes a `TaskAborted` error a client can read, not a wait forever; the
    task that was running on the engine is still waited for, and its result arrives."""
    profile_dir = tmp_path / "profile"
    profile_dir.mkdir()
    _start_controller(procs, "controller", profile_dir, "--reuse")
    _wait_for_files_newer_than(profile_dir, 0)
    engine = procs.start("engine0", corral_engine_argv(profile_dir))
    rc = corral.Client(profile_dir=profile_dir, timeout=30)
    try:
        rc.wait_for_engines(1, timeout=60)
        lview = rc.load_balanced_view()
        running = lview.apply_async(_slow_pid, 4)
        queued = lview.apply_async(_slow_pid, 0)
        msg_ids = [running.msg_ids[0], queued.msg_ids[0]]
        _wait_until(lambda: rc.queue_status()["unassigned"] == 1)
        # Unfinished tasks reach the task database after half a second.
        _wait_stored(profile_dir / "db" / "corral-tasks.sqlite", msg_ids)
    finally:
        rc.close()
    _sigkill_controller(procs)

    since = time.time_ns()
    _start_controller(procs, "controller", profile_dir, "--restore")
    _wait_for_files_newer_than(profile_dir, since)
    other = corral.Client(profile_dir=profile_dir, timeout=30)
    try:
        _wait_ids(other, [0])
        with pytest.raises(corral.error.RemoteError, match="submit it again") as caught:
            other.get_result(msg_ids[1], block=True).get(timeout=30)
        assert caught.value.ename == "TaskAborted"
        assert other.get_result(msg_ids[0], block=True).get(timeout=30) == engine.pid
    finally:
        other.close()
