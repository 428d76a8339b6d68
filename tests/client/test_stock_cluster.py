"""The corral client against a stock ipyparallel 9.2 controller and engines."""

from __future__ import annotations

import os
import signal
import sys
import time

import cloudpickle

import numpy as np
import pytest

import corral
from corral import error

# Engines cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def add(a, b):
    return a + b


def test_ids_and_len(stock):
    c = stock.client
    assert c.ids == [0, 1]
    assert len(c) == 2


def test_apply_sync_values_and_numpy(stock):
    c = stock.client
    assert c[:].apply_sync(add, 20, 22) == [42, 42]

    def make(n):
        import numpy

        return numpy.arange(n, dtype="float64")

    arrays = c[:].apply_sync(make, 1000)  # 8000 bytes: a separate buffer frame
    assert len(arrays) == 2
    for a in arrays:
        np.testing.assert_array_equal(a, np.arange(1000, dtype="float64"))


def test_single_engine_view_gives_single_values(stock):
    c = stock.client
    assert c[0].apply_sync(add, 1, 2) == 3
    ar = c[1].apply_async(os.getpid)
    assert isinstance(ar.get(timeout=30), int)
    assert ar.metadata["engine_id"] == 1
    assert ar.data == {}


def test_block_flag_and_async(stock):
    dv = stock.client[:]
    assert dv.block is False
    ar = dv.apply(add, 1, 1)
    assert isinstance(ar, corral.AsyncResult)
    assert ar.get(timeout=30) == [2, 2]
    assert ar.ready() and ar.successful() and ar.progress == 2 and len(ar) == 2
    dv.block = True
    assert dv.apply(add, 2, 2) == [4, 4]


def test_stdout_and_stderr(stock):
    def talk():
        import sys

        print("hello from", "engine")
        print("oops", file=sys.stderr)
        return 1

    ar = stock.client[:].apply_async(talk)
    ar.get(timeout=30)
    # Released only after idle: the streams are complete.
    assert ar.stdout == ["hello from engine\n"] * 2
    assert ar.stderr == ["oops\n"] * 2
    single = stock.client[0].apply_async(talk)
    single.get(timeout=30)
    assert single.stdout == "hello from engine\n"


def test_remote_error_single_engine(stock):
    def fail():
        return 1 / 0

    ar = stock.client[0].apply_async(fail)
    with pytest.raises(error.RemoteError) as info:
        ar.get(timeout=30)
    e = info.value
    assert e.ename == "ZeroDivisionError"
    assert "division by zero" in e.evalue
    assert "ZeroDivisionError" in e.traceback and "fail" in e.traceback
    assert e.engine_info["engine_id"] == 0
    assert str(e).startswith("[0:apply] ZeroDivisionError")
    assert e.render_traceback()[0] == "[0:apply]"
    assert not ar.successful()


def test_composite_error_several_engines(stock):
    def fail():
        raise ValueError("bad value")

    with pytest.raises(error.CompositeError) as info:
        stock.client[:].apply_sync(fail)
    e = info.value
    assert [en for en, *_ in e.elist] == ["ValueError", "ValueError"]
    assert sorted(ei["engine_id"] for *_, ei in e.elist) == [0, 1]
    assert all("bad value" in tb for _, _, tb, _ in e.elist)
    assert "[0:apply]" in "\n".join(e.render_traceback())
    with pytest.raises(error.RemoteError):
        e.raise_exception(0)


def test_publish_data_is_final_when_get_returns(stock):
    def publish(n):
        import time

        from ipyparallel.datapub import publish_data

        time.sleep(0.3)
        for i in range(n):
            publish_data({"i": i, "square": i * i})
        publish_data({"done": True})
        return n

    ar = stock.client[:].apply_async(publish, 500)
    assert ar.data == [{}, {}]
    assert ar.get(timeout=60) == [500, 500]
    # The core promise: no sleep, no polling; the last publication is already here.
    assert ar.data == [{"i": 499, "square": 499 * 499, "done": True}] * 2
    md = ar.metadata
    assert md[0]["data"]["i"] == 499 and md[0]["data_messages"] == 501


def test_publish_data_live_and_numpy(stock):
    def slow():
        import time

        import numpy
        from ipyparallel.datapub import publish_data

        for i in range(20):
            publish_data({"step": i, "a": numpy.full(300, i, dtype="float64")})
            time.sleep(0.05)
        return "done"

    ar = stock.client[0].apply_async(slow)
    seen = set()
    deadline = time.monotonic() + 30
    while not ar.ready() and time.monotonic() < deadline:
        d = ar.data
        if d:
            seen.add(d["step"])
        time.sleep(0.01)
    assert ar.get(timeout=30) == "done"
    assert len(seen) > 3, seen  # observed while running
    assert ar.data["step"] == 19
    np.testing.assert_array_equal(ar.data["a"], np.full(300, 19.0))


def test_iter_data(stock):
    def pub():
        import time

        from ipyparallel.datapub import publish_data

        for i in range(5):
            publish_data({"i": i})
            time.sleep(0.1)

    ar = stock.client[0].apply_async(pub)
    snapshots = [dict(d) for d in ar.iter_data(timeout=30)]
    assert snapshots[-1] == {"i": 4}
    assert len(snapshots) >= 2


def test_load_balanced_apply(stock):
    lb = stock.client.load_balanced_view()
    ars = [lb.apply_async(add, i, 1) for i in range(6)]
    assert [ar.get(timeout=30) for ar in ars] == [1, 2, 3, 4, 5, 6]
    assert {ar.metadata["engine_id"] for ar in ars} <= {0, 1}
    assert lb.apply_sync(add, 2, 3) == 5


def test_execute(stock):
    ar = stock.client[:].execute("x = 5", block=False)
    replies = ar.get(timeout=30)  # ExecuteReply objects, as ipyparallel's
    assert [r.execute_result for r in replies] == [None, None]
    assert all(isinstance(r.execution_count, int) for r in replies)


def test_queue_status(stock):
    status = stock.client.queue_status()
    assert set(status) >= {0, 1, "unassigned"}
    assert "completed" in status[0]


def test_wait_for_engines_timeout(stock):
    with pytest.raises(TimeoutError, match="2 engine"):
        stock.client.wait_for_engines(3, timeout=0.5)


def test_get_timeout(stock):
    ar = stock.client[0].apply_async(time.sleep, 1.5)
    with pytest.raises(TimeoutError):
        ar.get(timeout=0.1)
    assert ar.get(timeout=30) is None


def test_engine_death_raises_engine_error(fresh_stock):
    c = fresh_stock.client
    pid = c[0].apply_sync(os.getpid)
    def nap():
        import os
        import time

        time.sleep(60 if os.getpid() == pid else 0.2)
        return "woke"

    ar = c[:].apply_async(nap)
    single = c[0].apply_async(nap)  # queued behind the first on engine 0
    time.sleep(1.0)
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(error.CompositeError) as info:
        ar.get(timeout=30)
    assert time.monotonic() - t0 < 30
    (en, ev, _tb, ei), = info.value.elist
    assert en == "EngineError"
    assert "Engine 0 died while running task" in ev
    with pytest.raises(error.EngineError):
        info.value.raise_exception(0)
    with pytest.raises(error.EngineError) as single_info:
        single.get(timeout=5)
    assert isinstance(single_info.value, error.RemoteError)
    assert c.ids == [1]
    assert c[1].apply_sync(add, 1, 1) == 2


def test_no_cluster_fails_fast(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        corral.Client(profile_dir=tmp_path)
    assert time.monotonic() - t0 < 3
    msg = str(info.value)
    assert str(tmp_path / "security" / "ipcontroller-client.json") in msg
    assert "corral cluster start -n 4 --daemonize" in msg
    assert "corral.Cluster(n=4)" in msg


def test_stale_connection_file_names_url(tmp_path):
    import json
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    sec = tmp_path / "security"
    sec.mkdir()
    conn = {k: port for k in ("registration", "control", "mux", "task", "iopub",
                              "notification", "broadcast")}
    conn.update(interface="tcp://127.0.0.1", key="k", ssh="", location="",
                signature_scheme="hmac-sha256", pack="json", unpack="json",
                task_scheme="leastload", curve_serverkey=None)
    (sec / "ipcontroller-client.json").write_text(json.dumps(conn))
    try:
        with pytest.raises(TimeoutError, match=f"tcp://127.0.0.1:{port}.*is the cluster running"):
            corral.Client(profile_dir=tmp_path, timeout=0.5)
    finally:
        s.close()


def test_ctrl_c_interrupts_a_wait(stock):
    import threading

    ar = stock.client[1].apply_async(time.sleep, 3)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ar.get(timeout=20)
    assert time.monotonic() - t0 < 1.5
    assert ar.get(timeout=20) is None


def test_shutdown_hub(fresh_stock):
    c = fresh_stock.client
    c.shutdown(hub=True)
    controller = fresh_stock.procs["controller"]
    controller.wait(timeout=20)
    assert controller.returncode is not None
