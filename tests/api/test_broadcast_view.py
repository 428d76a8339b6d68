"""BroadcastView on an all-corral cluster: one request through the broadcast scheduler,
per-engine results, data and output, as with a DirectView."""

import os

import pytest

import corral
from corral.error import CompositeError


def publish_steps(n):
    from corral.datapub import publish_data

    for i in range(n):
        publish_data({"i": i})
    print("published", n)
    return n


def test_apply_data_and_output_per_engine(client4):
    c = client4
    bview = c.broadcast_view()
    assert isinstance(bview, corral.BroadcastView)
    assert len(set(bview.apply_sync(os.getpid))) == 4
    ar = bview.apply_async(publish_steps, 50)
    assert ar.get(timeout=30) == [50] * 4
    assert ar.data == [{"i": 49}] * 4, "the reply does not overtake the data"
    assert all("published 50" in s for s in ar.stdout)
    assert sorted(md["engine_id"] for md in ar.metadata) == [0, 1, 2, 3]
    assert all(m in c.history for m in ar.msg_ids) and bview.outstanding == set()


def test_subset_namespace_and_errors(client4):
    bview = client4.broadcast_view([1, 3], block=True)
    assert bview.apply(lambda: 5) == [5, 5]
    bview.push({"x": 7})
    bview.execute("y = x * 2")
    assert bview.pull(["x", "y"]) == [[7, 14], [7, 14]]
    bview.scatter("part", list(range(6)))
    assert bview.gather("part") == list(range(6))
    with pytest.raises(CompositeError) as info:
        bview.apply(lambda: 1 / 0)
    assert "ZeroDivisionError" in str(info.value)
    assert client4.broadcast_view(2).apply_sync(lambda: "one") == "one"


def test_coalescing_gives_one_reply_and_keeps_output_and_data_per_engine(client4):
    c = client4
    bview = c.broadcast_view(is_coalescing=True)
    assert bview.is_coalescing
    ar = bview.apply_async(publish_steps, 50)
    assert isinstance(ar, corral.client.asyncresult.CoalescedResult)
    assert ar.get(timeout=30) == [50] * 4
    # One combined reply, filed under the request: the engines' copies got none.
    assert c._core.reply(ar.request_id) is not None
    assert all(c._core.reply(m) is None for m in ar.msg_ids)
    assert ar.data == [{"i": 49}] * 4, "the combined reply does not overtake any engine's data"
    assert all("published 50" in s for s in ar.stdout)
    assert ar.request_id in c.history and c.outstanding == set()
    assert len(set(bview.apply_sync(os.getpid))) == 4
    bview.block = True
    bview.push({"x": 3})
    assert bview.pull("x") == [3] * 4 and bview["x"] == [3] * 4
    assert c.broadcast_view(2, is_coalescing=True).apply_sync(lambda: "one") == "one"


def test_coalescing_futures_and_errors(client4):
    import concurrent.futures

    bview = client4.broadcast_view([0, 1], is_coalescing=True)
    ars = [bview.apply_async(lambda k=k: k) for k in range(5)]
    done = list(concurrent.futures.as_completed(ars, timeout=30))
    assert len(done) == 5 and [ar.result() for ar in ars] == [[k, k] for k in range(5)]
    with pytest.raises(CompositeError) as info:
        bview.apply_sync(lambda: 1 / 0)
    assert "ZeroDivisionError" in str(info.value)


def test_coalescing_with_a_dead_engine_fails_instead_of_hanging(start_cluster):
    import signal

    cluster, c = start_cluster(2)
    pids = c[:].apply_sync(os.getpid)
    ar = c.broadcast_view(is_coalescing=True).apply_async(__import__("time").sleep, 30)
    os.kill(pids[1], signal.SIGKILL)
    with pytest.raises((CompositeError, corral.error.EngineError)) as info:
        ar.get(timeout=30)
    assert "EngineError" in str(info.value) or isinstance(info.value, corral.error.EngineError)
