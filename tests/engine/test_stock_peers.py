"""corral engines serving a STOCK ipyparallel controller and client."""

from __future__ import annotations

import time

import pytest

ipp = pytest.importorskip("ipyparallel")


def remote(f):
    """Stock ipyparallel re-imports a function's module on the engine unless it is
    `__main__`; test functions live in an unimportable test module."""
    f.__module__ = "__main__"
    return f


def wait_until(cond, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def test_apply_returns_values_and_numpy_arrays(cluster):
    client, _, _ = cluster
    assert len(client.ids) == 2

    @remote
    def add(a, b=1):
        return a + b

    assert client[:].apply_sync(add, 2, b=5) == [7, 7]

    @remote
    def array(n):
        import numpy as np

        return np.arange(n, dtype="f8")

    a = client[0].apply_sync(array, 10_000)
    assert a.shape == (10_000,) and a[-1] == 9999.0


def test_print_output_reaches_stdout_and_stderr(cluster):
    client, _, _ = cluster

    @remote
    def chatty(n):
        import sys

        print("hello stdout", n)
        print("hello stderr", n, file=sys.stderr)
        return n

    ar = client[0].apply_async(chatty, 7)
    assert ar.get(timeout=20) == 7
    # A stock client files IOPub on its own thread, each stream message separately.
    assert wait_until(lambda: "hello stdout 7" in ar.stdout)
    assert wait_until(lambda: "hello stderr 7" in ar.stderr)


def test_exception_becomes_remote_error_with_traceback(cluster):
    client, _, _ = cluster

    @remote
    def boom():
        return 1 / 0

    with pytest.raises(ipp.error.RemoteError) as info:
        client[0].apply_sync(boom)
    err = info.value
    assert err.ename == "ZeroDivisionError"
    assert "boom" in err.traceback and "1 / 0" in err.traceback
    # The engine lives on.
    assert client[0].apply_sync(remote(lambda: 5)) == 5


def test_publish_data_reaches_stock_client(cluster):
    client, _, _ = cluster

    @remote
    def publisher():
        import numpy as np

        from corral.datapub import publish_data

        for i in range(5):
            publish_data(dict(i=i, a=np.full(1000, float(i))))
        return "done"

    ar = client[:].apply_async(publisher)
    assert ar.get(timeout=20) == ["done", "done"]
    assert wait_until(lambda: all(d.get("i") == 4 for d in ar.data))
    for d in ar.data:
        assert d["a"].shape == (1000,) and d["a"][0] == 4.0


def test_ipyparallel_datapub_import_works_on_corral_engine(cluster):
    client, _, _ = cluster

    @remote
    def publisher():
        from ipyparallel.datapub import publish_data

        publish_data({"x": 42})

    ar = client[0].apply_async(publisher)
    ar.get(timeout=30)
    assert wait_until(lambda: ar.data.get("x") == 42)


def test_execute_runs_code_in_user_namespace(cluster):
    client, _, _ = cluster
    dv = client[0]
    ar = dv.execute("a = 5\nprint('a is', a)\na * 2", silent=False, block=False)
    ar.get(timeout=20)
    assert wait_until(lambda: "a is 5" in ar.stdout)
    assert dv.pull("a", block=True) == 5
    with pytest.raises(ipp.error.RemoteError) as info:
        dv.execute("1/0", block=True)
    assert info.value.ename == "ZeroDivisionError"


def test_abort_and_clear(cluster):
    client, _, _ = cluster
    dv = client[1]

    @remote
    def sleep(t):
        import time

        time.sleep(t)
        return t

    running = dv.apply_async(sleep, 1.0)
    queued = dv.apply_async(sleep, 0.1)
    time.sleep(0.2)
    dv.abort(queued, block=True)
    assert running.get(timeout=20) == 1.0
    with pytest.raises(ipp.error.TaskAborted):
        queued.get(timeout=20)

    dv.push({"zz": 3}, block=True)
    assert dv.pull("zz", block=True) == 3
    client.clear(targets=[1], block=True)
    with pytest.raises(ipp.error.RemoteError):
        dv.pull("zz", block=True)


def engine_exits(procs, timeout):
    """Name of the first engine process to exit within `timeout`, and its exit code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, p in procs.procs.items():
            if name.startswith("engine") and p.poll() is not None:
                return name, p.returncode
        time.sleep(0.05)
    return None, None


def test_shutdown_unregisters_engine(cluster):
    client, procs, _ = cluster
    client.shutdown(targets=[0], block=True)
    assert wait_until(lambda: client.ids == [1], timeout=20), client.ids
    name, code = engine_exits(procs, 10)
    assert name is not None and code == 0


def test_sigterm_exits_cleanly_and_unregisters(cluster):
    import os
    import signal

    client, procs, _ = cluster
    os.kill(procs.procs["engine1"].pid, signal.SIGTERM)
    assert procs.procs["engine1"].wait(10) == 0
    assert wait_until(lambda: len(client.ids) == 1, timeout=20), client.ids


def test_sigint_interrupts_the_task_and_the_engine_lives(cluster):
    import os
    import signal

    client, _, _ = cluster
    pid = client[0].apply_sync(remote(lambda: __import__("os").getpid()))

    @remote
    def long_sleep():
        import time

        time.sleep(30)

    ar = client[0].apply_async(long_sleep)
    time.sleep(1.0)
    os.kill(pid, signal.SIGINT)
    with pytest.raises(ipp.error.RemoteError) as info:
        ar.get(timeout=20)
    assert info.value.ename == "KeyboardInterrupt"
    assert client[0].apply_sync(remote(lambda: 6)) == 6


def test_stock_require_and_reference(cluster):
    """A stock client's @ipp.require and ipp.Reference work on corral engines."""
    client, _, _ = cluster

    @ipp.require("json")
    @ipp.interactive
    def dumps():
        return json.dumps([1])  # noqa: F821 - imported on the engine by require

    assert client[:].apply_sync(dumps) == ["[1]", "[1]"]
    client[:].push({"y": 5}, block=True)
    assert client[:].apply_sync(ipp.interactive(lambda v: v + 1), ipp.Reference("y")) == [6, 6]
