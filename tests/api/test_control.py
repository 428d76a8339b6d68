"""Client control (abort, clear, shutdown) and AsyncResult's interactive helpers, on an
all-corral cluster."""

import sys
import time

import pytest

import corral
from corral.error import RemoteError, TaskAborted


def _wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_abort_queued_task_by_result_and_by_id(client4):
    c = client4
    busy = c[0].apply_async(time.sleep, 1.5)
    queued = c[0].apply_async(lambda: "ran")
    also_queued = c[0].apply_async(lambda: "ran too")
    queued.abort()
    c.abort(also_queued.msg_ids[0], targets=[0], block=True)
    busy.get(timeout=30)  # the running task is not stopped
    with pytest.raises(TaskAborted):
        queued.get(timeout=30)
    with pytest.raises(TaskAborted):
        also_queued.get(timeout=30)
    assert c[0].apply_sync(lambda: "engine still works") == "engine still works"
    with pytest.raises(RuntimeError):
        busy.abort()  # already done


def test_abort_everything_queued(client4):
    c = client4
    busy = c[1].apply_async(_busy, 1.5)
    # Running, not merely queued (a loaded machine can take a while to start it): an abort
    # without ids aborts everything the engine has not started.
    assert _wait_until(lambda: busy.data.get("started"))
    queued = [c[1].apply_async(lambda: 1) for _ in range(3)]
    assert _wait_until(lambda: c.queue_status(1)["queue"] >= 4)
    time.sleep(0.2)  # the engine has read what the hub forwarded
    ar = c.abort(targets=1)
    assert ar.get(timeout=30) is None
    busy.get(timeout=30)
    for q in queued:
        with pytest.raises(TaskAborted):
            q.get(timeout=30)


def _busy(seconds):
    import time

    from corral.datapub import publish_data

    publish_data({"started": True})
    time.sleep(seconds)


def test_abort_load_balanced_tasks(client4):
    c = client4
    lv = c.load_balanced_view()
    blockers = [c[i].apply_async(_busy, 1.5) for i in c.ids]
    # Every engine must be busy before the load-balanced task exists, or the scheduler's
    # path could reach an engine ahead of its blocker and run the task at once.
    deadline = time.monotonic() + 30
    while not all(b.data.get("started") for b in blockers) and time.monotonic() < deadline:
        time.sleep(0.01)
    later = lv.apply_async(lambda: "late")
    c.abort(later, block=True)
    for b in blockers:
        b.get(timeout=30)
    with pytest.raises(TaskAborted):
        later.get(timeout=30)


def test_clear_resets_namespaces(client4):
    dv = client4[:]
    dv.push({"kept": 1}, block=True)
    client4.clear(targets=[0, 1], block=True)
    with pytest.raises(corral.CompositeError):
        dv.pull("kept", block=True)
    assert client4[[2, 3]].pull("kept", block=True) == [1, 1]
    dv.clear(block=True)
    with pytest.raises(RemoteError):
        client4[3].pull("kept", block=True)


def test_shutdown_engine_then_hub(start_cluster):
    _, c = start_cluster(2)
    c.shutdown(targets=1, block=True)
    assert _wait_until(lambda: c.ids == [0])
    assert c[0].apply_sync(lambda: 5) == 5
    c.shutdown(hub=True)
    assert _wait_until(lambda: c._core.hub_shut_down())


def test_wait_interactive_plain_text(client4, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # no tqdm: the plain line
    ar = client4[:].apply_async(time.sleep, 0.3)
    ar.wait_interactive(interval=0.05, timeout=30)
    assert ar.ready()
    out = capsys.readouterr().out
    assert "4/4 tasks finished" in out and out.endswith("\n")


def test_wait_interactive_times_out_without_raising(client4, capsys):
    ar = client4[0].apply_async(time.sleep, 2)
    t0 = time.monotonic()
    ar.wait_interactive(interval=0.05, timeout=0.3)
    assert time.monotonic() - t0 < 1.5 and not ar.ready()
    ar.get(timeout=30)
    capsys.readouterr()


def test_display_outputs(client4, capsys):
    def talk():
        import sys as _sys

        print("hello")
        print("oops", file=_sys.stderr)

    ar = client4[[0, 1]].apply_async(talk)
    with pytest.raises(RuntimeError):
        client4[2].apply_async(time.sleep, 1).display_outputs()
    ar.get(timeout=30)
    ar.display_outputs()
    captured = capsys.readouterr()
    assert captured.out == "[stdout:0] \nhello\n[stdout:1] \nhello\n"
    assert captured.err == "[stderr:0] \noops\n[stderr:1] \noops\n"
    ar.display_outputs(groupby="engine")
    assert capsys.readouterr().out == "[stdout:0] \nhello\n[stdout:1] \nhello\n"
    single = client4[3].apply_async(talk)
    single.get(timeout=30)
    single.display_outputs()
    assert capsys.readouterr().out == "hello\n"


def test_remote_and_parallel_decorators(client4):
    dv = client4[:]

    @dv.remote(block=True)
    def where(x):
        return x + 1

    assert where(1) == [2] * 4

    @client4[0].remote(block=False)
    def later(x):
        return x * 3

    assert later(3).get(timeout=30) == 9

    @dv.parallel(block=True)
    def doubled(chunk):
        return [2 * x for x in chunk]

    assert doubled(list(range(10))) == [2 * x for x in range(10)]

    @dv.parallel(block=True)
    def inc(x):
        return x + 1

    assert inc.map(range(6)) == [1, 2, 3, 4, 5, 6]
    lv = client4.load_balanced_view()

    @lv.parallel(block=True, chunksize=3)
    def summed(chunk):
        return [sum(chunk)]

    assert summed(list(range(9))) == [3, 12, 21]


def test_wait_interactive_with_tqdm(client4, capsys):
    pytest.importorskip("tqdm")
    ar = client4[:].apply_async(time.sleep, 0.2)
    ar.wait_interactive(interval=0.05, timeout=30)
    assert ar.ready()
    captured = capsys.readouterr()
    assert "4/4" in captured.out + captured.err
