"""``AsyncResult`` as a ``concurrent.futures.Future`` and an awaitable, on a corral cluster."""

import asyncio
import concurrent.futures as cf
import os
import signal
import threading
import time

import pytest

import corral
from corral.error import RemoteError


def slow_square(x, delay=0.0):
    import time

    time.sleep(delay)
    return x * x


def fail(msg):
    raise ValueError(msg)


@pytest.fixture
def client2(start_cluster):
    _, client = start_cluster(2)
    return client


def test_async_result_is_a_future(client2):
    ar = client2.load_balanced_view().apply_async(slow_square, 3)
    assert isinstance(ar, cf.Future)
    assert ar.result(timeout=30) == 9
    assert ar.done() and not ar.running() and not ar.cancelled()
    assert ar.exception() is None


def test_as_completed_over_100_results(client2):
    view = client2.load_balanced_view()
    ars = {view.apply_async(slow_square, i, 0.001 * (i % 5)): i for i in range(100)}
    seen = {}
    for ar in cf.as_completed(ars, timeout=60):
        seen[ars[ar]] = ar.result()
    assert seen == {i: i * i for i in range(100)}
    assert client2._core.stats()["watched"] == 0, "every watch was reported and dropped"


def test_wait_first_completed_and_all(client2):
    view = client2.load_balanced_view()
    slow = view.apply_async(slow_square, 2, 3.0)
    fast = view.apply_async(slow_square, 3, 0.0)
    done, pending = cf.wait([slow, fast], timeout=30, return_when=cf.FIRST_COMPLETED)
    assert fast in done and slow in pending
    done, pending = cf.wait([slow, fast], timeout=30)
    assert not pending and slow.result() == 4


def test_done_callback_runs_once_from_the_completion_thread(client2):
    ar = client2[0].apply_async(slow_square, 4, 0.5)
    called = []
    fired = threading.Event()

    def callback(f):
        called.append((f.result(), threading.current_thread().name))
        fired.set()

    ar.add_done_callback(callback)
    assert fired.wait(30), "the callback never ran"
    assert called == [(16, "corral-futures")]
    late = []
    ar.add_done_callback(lambda f: late.append(f.result()))
    assert late == [16], "a callback added once done runs at once"


def test_exception_and_callback_on_failure(client2):
    ar = client2[0].apply_async(fail, "boom")
    got = cf.Future()
    ar.add_done_callback(lambda f: got.set_result(f.exception()))
    exc = got.result(timeout=30)
    assert isinstance(exc, RemoteError) and exc.ename == "ValueError"
    assert ar.exception() is exc
    with pytest.raises(RemoteError):
        ar.result()


def test_await_inside_a_running_loop(client2):
    view = client2.load_balanced_view()

    async def main():
        first = await view.apply_async(slow_square, 5, 0.2)
        wrapped = asyncio.wrap_future(view.apply_async(slow_square, 6))
        both = await asyncio.gather(view.apply_async(slow_square, 7), wrapped)
        return first, both

    assert asyncio.run(asyncio.wait_for(main(), 30)) == (25, [49, 36])


def test_running_and_cancel(client2):
    view = client2[0]
    running = view.apply_async(slow_square, 1, 3.0)
    queued = view.apply_async(slow_square, 2)
    deadline = time.monotonic() + 30
    while not running.running():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.01)
    assert not running.cancel(), "a started task cannot be cancelled"
    assert queued.cancel() and queued.cancelled() and queued.done()
    with pytest.raises(cf.CancelledError):
        queued.result()
    assert running.result(timeout=30) == 1
    assert view.apply_sync(slow_square, 3) == 9, "the engine serves on"


def test_get_return_exceptions_r_result_dict_and_join(client2):
    dv = client2[:]
    ar = dv.apply_async(fail, "x")
    errors = ar.get(timeout=30, return_exceptions=True)
    assert [type(e) for e in errors] == [RemoteError, RemoteError]
    with pytest.raises(corral.CompositeError):
        ar.get()
    ok = dv.apply_async(slow_square, 3)
    assert ok.r == [9, 9]
    assert ok.result_dict == {0: 9, 1: 9}
    assert ok.wait_for_output(30)
    joined = corral.AsyncResult.join(ok, dv.apply_async(slow_square, 4))
    assert joined.get(timeout=30) == [9, 9, 16, 16]
    amr = client2.load_balanced_view().map_async(lambda x: 1 / x, [1, 0, 2])
    flat = amr.get(timeout=30, return_exceptions=True)
    assert flat[0] == 1.0 and isinstance(flat[1], RemoteError) and flat[2] == 0.5


def test_map_result_in_as_completed(client2):
    view = client2.load_balanced_view()
    maps = [view.map_async(slow_square, range(i, i + 3)) for i in range(5)]
    results = sorted(tuple(f.result()) for f in cf.as_completed(maps, timeout=30))
    assert results == sorted(tuple(x * x for x in range(i, i + 3)) for i in range(5))


def test_controller_loss_fails_watched_futures(start_cluster):
    cluster, client = start_cluster(1)
    ar = client[0].apply_async(slow_square, 1, 60)
    got = cf.Future()
    ar.add_done_callback(lambda f: got.set_result(f.exception()))
    os.kill(cluster.controller.pid, signal.SIGKILL)  # our own controller, by pid
    cluster.controller.process.wait(10)
    exc = got.result(timeout=30)
    assert isinstance(exc, corral.ControllerLost)


def test_client_wait_interactive(client2, capsys):
    view = client2.load_balanced_view()
    ars = [view.apply_async(slow_square, i, 0.2) for i in range(4)]
    client2.wait_interactive(interval=0.05, timeout=60)
    assert all(ar.ready() for ar in ars)
    out = capsys.readouterr()
    assert "4/4" in out.out + out.err
    client2.wait_interactive(jobs=ars)  # nothing left: returns at once


def test_engine_death_completes_a_watched_future(start_cluster):
    _, client = start_cluster(2)
    pid = client[0].apply_sync(os.getpid)
    ar = client[0].apply_async(slow_square, 1, 60)
    got = cf.Future()
    ar.add_done_callback(lambda f: got.set_result(f.exception()))
    os.kill(pid, signal.SIGKILL)  # an engine of our own cluster, by pid
    exc = got.result(timeout=30)
    assert isinstance(exc, corral.EngineError) or getattr(exc, "ename", "") == "EngineError"
