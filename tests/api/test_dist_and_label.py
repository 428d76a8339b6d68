"""``dist='r'``: round-robin scatter/gather and ``@parallel(dist='r')``; the ``label``
and ``track`` flags."""

import numpy as np
import pytest

from corral.client.map import join_partitions, partition


def test_round_robin_partition_and_join_are_inverse():
    seq = list(range(11))
    parts = [partition(seq, p, 4, dist="r") for p in range(4)]
    assert parts == [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7]]
    assert join_partitions(parts, "r") == seq
    arr = np.arange(22.0).reshape(11, 2)
    aparts = [partition(arr, p, 3, dist="r") for p in range(3)]
    assert np.array_equal(join_partitions(aparts, "r"), arr)
    few = [p for p in (partition([7, 8], i, 4, dist="r") for i in range(4)) if p]
    assert join_partitions(few, "r") == [7, 8]
    assert list(partition(iter(range(7)), 1, 3, n=7, dist="r")) == [1, 4]
    with pytest.raises(ValueError, match="round robin"):
        partition(seq, 0, 2, dist="x")


def test_scatter_gather_round_robin(client4):
    dv = client4[:]
    dv.scatter("part", list(range(10)), dist="r", block=True)
    assert dv.pull("part", block=True) == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]
    assert dv.gather("part", dist="r", block=True) == list(range(10))
    dv.scatter("arr", np.arange(9), dist="r", block=True)
    assert np.array_equal(dv.gather("arr", dist="r", block=True), np.arange(9))


def test_parallel_round_robin(client4):
    dv = client4[:]

    @dv.parallel(dist="r", block=True)
    def tag(xs):
        import os

        return [(x, os.getpid()) for x in xs]

    out = tag(list(range(8)))
    assert [x for x, _ in out] == list(range(8))
    pids = [pid for _, pid in out]
    assert pids[:4] == pids[4:], "element i ran on engine i % 4"
    assert dv.parallel(dist="r", block=True)(lambda x: x + 1).map(range(6)) == list(range(1, 7))
    with pytest.raises(ValueError, match="dist"):
        dv.parallel(dist="z")


def test_label_and_track_flags(client4):
    dv = client4[[0, 1]]
    dv.set_flags(label="stage-1", track=True)
    ar = dv.apply_async(lambda: 1)
    assert ar.get(timeout=30) == [1, 1]
    assert ar.label == ["stage-1", "stage-1"]
    assert ar.wait_for_send(0) and ar.sent
    lview = client4.load_balanced_view()
    with lview.temp_flags(label="lb"):
        lar = lview.apply_async(lambda: 2)
    assert lar.get(timeout=30) == 2 and lar.label == "lb"
    assert lview.label is None
    assert client4.load_balanced_view().apply_async(lambda: 3).get(timeout=30) == 3
