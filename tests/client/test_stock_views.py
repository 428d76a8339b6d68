"""The corral client's map and namespace operations against a stock cluster: the helper
functions travel by reference and stock engines run them in their user namespace too."""


def test_map_push_pull_scatter_gather(stock):
    c = stock.client
    dv = c[:]
    assert dv.map_sync(lambda x: x * x, range(7)) == [x * x for x in range(7)]
    assert c.load_balanced_view().map_sync(str, range(3)) == ["0", "1", "2"]
    dv.push({"a": 3}, block=True)
    dv.execute("b = a + 1", block=True)
    assert dv.pull(["a", "b"], block=True) == [[3, 4], [3, 4]]
    dv.scatter("part", list(range(5)), block=True)
    assert dv.gather("part", block=True) == list(range(5))
    c.clear(block=True)
