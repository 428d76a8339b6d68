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


def test_dependencies_on_a_stock_scheduler(stock):
    """after/follow in both wire forms (msg_id list, Dependency dict) mean the same to
    stock ipyparallel's task scheduler."""
    import os

    import corral

    c = stock.client
    lview = c.load_balanced_view()
    where = lview.apply_async(os.getpid)
    with lview.temp_flags(follow=where):
        assert lview.apply_sync(os.getpid) == where.get(timeout=30)
    with lview.temp_flags(after=corral.Dependency([where], success=True)):
        assert lview.apply_sync(lambda: "after") == "after"
    c.wait(timeout=30)
    assert c.outstanding == set()


def test_broadcast_view_on_a_stock_scheduler(stock):
    c = stock.client
    bview = c.broadcast_view()
    ar = bview.apply_async(lambda x: x * 3, 4)
    assert ar.get(timeout=30) == [12] * len(c.ids)
    assert sorted(md["engine_id"] for md in ar.metadata) == sorted(c.ids)
    bview.push({"b": 1}, block=True)
    assert bview.pull("b", block=True) == [1] * len(c.ids)


def test_coalescing_broadcast_view_on_a_stock_scheduler(stock):
    c = stock.client
    bview = c.broadcast_view(is_coalescing=True)
    ar = bview.apply_async(lambda x: print("seen") or x * 3, 4)
    assert ar.get(timeout=30) == [12] * len(c.ids)
    assert ar.stdout == ["seen\n"] * len(c.ids)
    bview.push({"coalesced": 2}, block=True)
    assert bview.pull("coalesced", block=True) == [2] * len(c.ids)


def test_result_status_from_a_stock_hub(stock):
    """Another client reads a finished task's result from stock ipyparallel's hub."""
    import corral

    c = stock.client
    ar = c[0].apply_async(lambda: {"answer": 42})
    ar.get(timeout=30)
    other = corral.Client(profile_dir=stock.profile_dir, timeout=30)
    try:
        assert ar.msg_ids[0] in other.hub_history()
        status = other.result_status(ar.msg_ids, status_only=False)
        assert status["completed"] == ar.msg_ids
        assert status[ar.msg_ids[0]] == {"answer": 42}
    finally:
        other.close()
