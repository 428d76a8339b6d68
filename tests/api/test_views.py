"""Client, views and AsyncResult on an all-corral cluster."""

import os

import numpy as np
import pytest

import corral
from corral.error import CompositeError, RemoteError


def test_ids_and_views(client4):
    c = client4
    assert c.ids == [0, 1, 2, 3]
    assert c[:].targets == [0, 1, 2, 3]
    assert c[1].targets == 1
    assert c[1].apply_sync(os.getpid) != c[2].apply_sync(os.getpid)
    assert len(set(c[:].apply_sync(os.getpid))) == 4


def test_apply_async_and_sync_values(client4):
    dv = client4[:]
    ar = dv.apply_async(lambda x, y=1: x * 2 + y, 20, y=2)
    assert ar.get(timeout=30) == [42] * 4
    assert ar.ready() and ar.successful()
    assert dv.apply_sync(np.arange, 5)[0].tolist() == [0, 1, 2, 3, 4]
    big = client4[0].apply_sync(lambda a: a * 2, np.ones(100_000))
    assert big.shape == (100_000,) and big.sum() == 200_000


def test_block_flag(client4):
    dv = client4[[0, 1]]
    dv.block = True
    assert dv.apply(lambda: 7) == [7, 7]
    dv.block = False
    ar = dv.apply(lambda: 8)
    assert ar.get(timeout=30) == [8, 8]


def test_stdout_and_stderr(client4):
    def talk():
        import sys

        print("hello from an engine")
        print("oops", file=sys.stderr)

    ar = client4[:].apply_async(talk)
    ar.get(timeout=30)
    assert all("hello from an engine" in s for s in ar.stdout)
    assert all("oops" in s for s in ar.stderr)
    single = client4[0].apply_async(talk)
    single.get(timeout=30)
    assert "hello from an engine" in single.stdout


def test_remote_error_single_engine(client4):
    def fail():
        return 1 / 0

    ar = client4[0].apply_async(fail)
    with pytest.raises(RemoteError) as info:
        ar.get(timeout=30)
    assert info.value.ename == "ZeroDivisionError"
    assert "1 / 0" in info.value.traceback or "division" in info.value.traceback
    assert ar.ready() and not ar.successful()


def test_composite_error_several_engines(client4):
    def fail():
        raise ValueError("bad value")

    ar = client4[:].apply_async(fail)
    with pytest.raises(CompositeError) as info:
        ar.get(timeout=30)
    assert len(info.value.elist) == 4
    assert "bad value" in str(info.value)


def test_metadata(client4):
    ar = client4[:].apply_async(lambda: 1)
    ar.get(timeout=30)
    md = ar.metadata
    assert [m["engine_id"] for m in md] == [0, 1, 2, 3]
    assert all(m["status"] == "ok" for m in md)
    assert all(m["started"] and m["completed"] for m in md)


def test_wait_with_timeout_then_result(client4):
    import time as _t

    ar = client4[0].apply_async(_t.sleep, 1.0)
    assert ar.wait(0.1) is False or not ar.ready()
    assert not ar.ready()
    ar.wait(30)
    assert ar.ready()


def test_unpicklable_argument_says_what_is_wrong(client4):
    import threading

    with pytest.raises(Exception) as info:
        client4[0].apply_sync(lambda x: x, threading.Lock())
    assert "pickle" in str(info.value).lower()


def test_client_without_cluster_says_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(Exception) as info:
        corral.Client(profile_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "security" / "ipcontroller-client.json") in message
    assert "corral cluster start" in message


def test_metadata_as_attributes_items_and_times(client4):
    import datetime

    dv = client4[[0, 1]]
    ar = dv.apply_async(lambda: (__import__("time").sleep(0.2), 5)[1])
    assert ar[0] == 5 and ar[-1] == 5 and ar[:] == [5, 5]
    assert ar.engine_id == [0, 1] and ar["engine_id"] == [0, 1]
    assert all(isinstance(t, datetime.datetime) for t in ar.completed)
    assert ar.completed[0] - ar.started[0] >= datetime.timedelta(seconds=0.15)
    assert 0.15 <= ar.wall_time < 30
    assert 0.3 <= ar.serial_time < 60, "two 0.2 s tasks, added up"
    assert ar.sent
    with pytest.raises(AttributeError):
        ar.no_such_key
    with pytest.raises(TypeError):
        ar[1.5]
    single = client4[2].apply_async(lambda: 9)
    assert single[0] == 9 and single.engine_id == 2
    assert isinstance(single.submitted, datetime.datetime)


def test_a_negative_engine_index_counts_from_the_end(start_cluster):
    import os

    _, c = start_cluster(2)
    pids = c[:].apply_sync(os.getpid)
    assert c[-1].apply_sync(os.getpid) == pids[-1]
    assert c[[-2, -1]].apply_sync(os.getpid) == pids
    with pytest.raises(IndexError, match="No such engine: -3"):
        c[-3].apply_sync(os.getpid)


def test_len_of_a_direct_view_is_its_engine_count(start_cluster):
    _, c = start_cluster(2)
    assert len(c[:]) == 2 and len(c[[1]]) == 1 and len(c[0]) == 1
