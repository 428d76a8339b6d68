"""``Client.executor()`` and ``view.executor``: views as ``concurrent.futures.Executor``s."""

import concurrent.futures as cf

import pytest

from corral.error import RemoteError


def square(x):
    return x * x


def add(x, y):
    return x + y


def sleep_then(x, delay):
    import time

    time.sleep(delay)
    return x


def fail(x):
    raise ValueError(x)


def test_client_executor_submit_and_map(client4):
    ex = client4.executor()
    assert isinstance(ex, cf.Executor)
    assert ex._max_workers == 4
    fut = ex.submit(add, 1, y=2)
    assert fut.result(timeout=30) == 3
    assert list(ex.map(square, range(20))) == [x * x for x in range(20)]
    assert list(ex.map(add, range(5), range(10, 15), chunksize=2)) == [10, 12, 14, 16, 18]


def test_direct_view_executor_map(client4):
    ex = client4[[0, 1]].executor
    assert ex._max_workers == 2
    assert list(ex.map(square, range(7))) == [x * x for x in range(7)]
    assert ex.submit(square, 3).result(timeout=30) == [9, 9]


def test_map_raises_the_remote_error_where_it_occurs(client4):
    results = client4.executor().map(fail, [1])
    with pytest.raises(RemoteError):
        list(results)


def test_map_timeout(client4):
    results = client4.executor().map(sleep_then, [1, 2], [5, 5], timeout=0.5)
    with pytest.raises(TimeoutError):
        next(results)


def test_context_manager_waits_and_refuses_after_shutdown(client4):
    with client4.executor() as ex:
        futures = [ex.submit(sleep_then, i, 0.2) for i in range(8)]
    assert all(f.done() for f in futures), "shutdown(wait=True) waited for them"
    assert [f.result() for f in futures] == list(range(8))
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 2)
    with cf.ThreadPoolExecutor(1):  # the stdlib idiom mixes with ours
        pass


def test_as_completed_over_executor_futures(client4):
    ex = client4.executor()
    futures = [ex.submit(sleep_then, i, 0.01 * (i % 3)) for i in range(40)]
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=60)) == list(range(40))


def test_shutdown_cancel_futures_drops_queued_work(client4):
    ex = client4[0].executor  # one engine: the rest queue behind the first
    futures = [ex.submit(sleep_then, i, 1.0) for i in range(4)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert any(f.cancelled() for f in futures[1:]), "queued tasks were cancelled"
    assert all(f.done() for f in futures)
    assert client4[0].apply_sync(square, 5) == 25, "the engine serves on"
