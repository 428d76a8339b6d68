"""map, push/pull, scatter/gather, execute and run on an all-corral cluster."""

import numpy as np
import pytest

import corral
from corral.client.map import join_partitions, partition
from corral.error import CompositeError, RemoteError


def square(x):
    return x * x


def test_partition_matches_ipyparallel():
    seq = list(range(10))
    parts = [partition(seq, p, 4) for p in range(4)]
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert join_partitions(parts) == seq
    arr = np.arange(7)
    assert join_partitions([partition(arr, p, 3) for p in range(3)]).tolist() == list(range(7))


def test_direct_map_chunks_across_engines(client4):
    dv = client4[:]
    assert dv.map_sync(square, range(10)) == [x * x for x in range(10)]
    ar = dv.map_async(lambda x, y: x + y, [1, 2, 3], [10, 20, 30])
    assert isinstance(ar, corral.AsyncMapResult)
    assert ar.get(timeout=30) == [11, 22, 33]
    assert len(ar) == 3  # 3 elements on 4 engines: one task per non-empty chunk
    # contiguous chunks: engine i gets the i-th chunk
    import os

    pids = dv.apply_sync(os.getpid)
    where = dv.map_sync(lambda _: os.getpid(), range(8))
    assert where == [pids[0]] * 2 + [pids[1]] * 2 + [pids[2]] * 2 + [pids[3]] * 2


def test_map_block_flag_iteration_and_empty(client4):
    dv = client4[[0, 1]]
    dv.block = True
    assert dv.map(str, range(4)) == ["0", "1", "2", "3"]
    dv.block = False
    ar = dv.map(square, range(6))
    assert list(ar) == [0, 1, 4, 9, 16, 25]
    assert dv.map_sync(square, []) == []
    with pytest.raises(TypeError):
        dv.map_sync(square, range(3), block=True)


def test_map_error_is_composite(client4):
    def boom(x):
        if x == 5:
            raise ValueError("five")
        return x

    with pytest.raises(CompositeError) as info:
        client4[:].map_sync(boom, range(8))
    assert "five" in str(info.value)
    mixed = client4[:].map_async(boom, range(8), return_exceptions=True).get(timeout=30)
    # the failed chunk [4, 5] becomes one exception in the flat list
    assert mixed[:4] == [0, 1, 2, 3] and isinstance(mixed[4], RemoteError) and mixed[5:] == [6, 7]


def test_load_balanced_map(client4):
    lv = client4.load_balanced_view()
    ar = lv.map_async(square, range(20))
    assert len(ar) == 20
    assert ar.get(timeout=30) == [x * x for x in range(20)]
    chunked = lv.map_async(square, range(20), chunksize=6)
    assert len(chunked) == 20 and len(chunked.msg_ids) == 4  # len counts elements
    assert list(chunked) == [x * x for x in range(20)]
    unordered = lv.map_async(square, range(10), ordered=False)
    assert sorted(unordered) == [x * x for x in range(10)]
    assert lv.map_sync(lambda a, b: a * b, range(5), range(5, 10)) == [
        a * b for a, b in zip(range(5), range(5, 10))
    ]


def test_push_pull_and_item_access(client4):
    dv = client4[:]
    dv.push({"a": 5, "b": "text"}, block=True)
    assert dv.pull("a", block=True) == [5] * 4
    assert dv.pull(["a", "b"], block=True) == [[5, "text"]] * 4
    dv["c"] = np.arange(3)
    assert [x.tolist() for x in dv["c"]] == [[0, 1, 2]] * 4
    one = client4[2]
    one["d"] = 7
    assert one["d"] == 7
    assert one.pull("c.shape", block=True) == (3,)
    with pytest.raises(RemoteError) as info:
        one.pull("undefined_name", block=True)
    assert info.value.ename == "NameError"


def test_pushed_names_visible_to_apply_and_execute(client4):
    dv = client4[:]
    dv.push({"a": 21}, block=True)
    assert dv.apply_sync(lambda: a * 2) == [42] * 4  # noqa: F821 - defined remotely
    dv.execute("b = a * 2", block=True)
    assert dv.pull("b", block=True) == [42] * 4
    ar = dv.execute("c = b + 1")
    # As ipyparallel: one ExecuteReply per engine, without a value for a statement.
    assert [r.execute_result for r in ar.get(timeout=30)] == [None] * 4
    assert dv["c"] == [43] * 4

    def set_global():
        global made_by_apply
        made_by_apply = "yes"

    dv.apply_sync(set_global)
    assert dv["made_by_apply"] == ["yes"] * 4


def test_scatter_gather(client4):
    dv = client4[:]
    dv.scatter("part", list(range(10)), block=True)
    assert dv.pull("part", block=True) == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert dv.gather("part", block=True) == list(range(10))
    dv.execute("part = [x * 10 for x in part]", block=True)
    assert dv.gather("part").get(timeout=30) == [x * 10 for x in range(10)]
    dv.scatter("arr", np.arange(8.0), block=True)
    assert dv.gather("arr", block=True).tolist() == list(np.arange(8.0))
    dv.scatter("x", [1, 2, 3, 4], flatten=True, block=True)
    assert dv["x"] == [1, 2, 3, 4]


def test_run_file(client4, tmp_path):
    script = tmp_path / "script.py"
    script.write_text("def helper(n):\n    return n + 1\n\nran = helper(41)\n")
    dv = client4[[0, 1]]
    dv.run(str(script), block=True)
    assert dv["ran"] == [42, 42]
    assert dv.apply_sync(lambda: helper(1)) == [2, 2]  # noqa: F821
