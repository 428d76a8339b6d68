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


def test_coalescing_is_refused_with_a_way_out(client4):
    with pytest.raises(NotImplementedError, match="is_coalescing=False"):
        client4.broadcast_view(is_coalescing=True)
