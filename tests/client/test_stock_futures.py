"""The corral client's futures, executor, lazy imap and joblib backend against a STOCK
ipyparallel cluster (ipcontroller + ipengines): completion comes from the same store."""

import asyncio
import concurrent.futures as cf
import itertools

import pytest


def square(x):
    return x * x


def test_as_completed_await_and_callbacks(stock):
    view = stock.client.load_balanced_view()
    ars = [view.apply_async(square, i) for i in range(50)]
    assert sorted(f.result() for f in cf.as_completed(ars, timeout=60)) == sorted(
        i * i for i in range(50))
    called = cf.Future()
    view.apply_async(square, 9).add_done_callback(lambda f: called.set_result(f.result()))
    assert called.result(timeout=30) == 81

    async def main():
        return await view.apply_async(square, 4)

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 16


def test_executor_and_lazy_imap(stock):
    ex = stock.client.executor()
    assert list(ex.map(square, range(10))) == [x * x for x in range(10)]
    view = stock.client.load_balanced_view()
    first = list(itertools.islice(view.imap(square, itertools.count(), max_outstanding=2), 5))
    assert first == [0, 1, 4, 9, 16]


def test_joblib_backend(stock):
    joblib = pytest.importorskip("joblib")
    stock.client.load_balanced_view().register_joblib_backend(name="corral-on-stock")
    out = joblib.Parallel(backend="corral-on-stock", n_jobs=2)(
        joblib.delayed(square)(i) for i in range(12))
    assert out == [i * i for i in range(12)]
