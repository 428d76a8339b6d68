"""The client's state stays flat over a long session that purges: after many tasks and
``purge_everything``, everything the client holds (the Rust store's maps, the Python
caches, the client's and views' histories) is back to what it was after warm-up.

This is the bookkeeping that ``benchmarks/soak.py`` measures as RSS over a million tasks;
here it is checked by count, on a real cluster, in a few seconds."""

import time

from corral.client.view import LoadBalancedView

TASKS = 3000
BATCH = 500


def noop():
    pass


def publish_and_print(i):
    from corral.datapub import publish_data

    publish_data({"i": i})
    print("task", i)
    return i


def python_side(c, views):
    return {
        "history": len(c.history),
        "results": len(c._results),
        "data": len(c._data),
        "outstanding": len(c._outstanding),
        "view_histories": [len(v.history) for v in views],
    }


def run_session(c, lview, dview, n):
    """``n`` load-balanced tasks in batches with a purge after each, as a long session
    would, plus direct tasks with output and publications, and control requests (which
    no history names)."""
    done = 0
    while done < n:
        ars = [lview.apply_async(noop) for _ in range(BATCH)]
        for ar in ars:
            ar.get(timeout=60)
        done += BATCH
        c.purge_everything()
    mapped = dview.map_async(publish_and_print, range(20))
    assert mapped.get(timeout=60) == list(range(20))
    mapped.data  # read some publications, leave others unread
    c.clear(block=True)
    c.abort(block=True)
    c.purge_everything()


def test_purge_everything_returns_the_client_to_its_baseline(start_cluster):
    _, c = start_cluster(2)
    lview = c.load_balanced_view()
    dview = c[:]
    views = [lview, dview]
    run_session(c, lview, dview, BATCH)  # warm-up: first pickles, sockets, map sizes
    baseline = c._core.stats()
    assert baseline["tasks"] == 0, baseline
    assert python_side(c, views) == {
        "history": 0, "results": 0, "data": 0, "outstanding": 0, "view_histories": [0, 0]}

    run_session(c, lview, dview, TASKS)

    after = c._core.stats()
    # The map's allocation may differ by a rehash, but is bounded, never one per task.
    assert after.pop("task_capacity") <= max(baseline.pop("task_capacity"), 8192)
    assert after == baseline
    assert python_side(c, views) == {
        "history": 0, "results": 0, "data": 0, "outstanding": 0, "view_histories": [0, 0]}


def test_purge_local_results_all_forgets_control_requests_but_not_the_history(start_cluster):
    _, c = start_cluster(2)
    lview = c.load_balanced_view()
    ar = lview.apply_async(noop)
    ar.get(timeout=30)
    c.clear(block=True)  # a control request: in no history
    assert c._core.stats()["tasks"] == 1 + len(c.ids)
    c.purge_local_results("all")
    assert c._core.stats()["tasks"] == 0
    assert c._results == {} and c._data == {}
    # As ipyparallel, only purge_everything clears the histories.
    assert c.history == ar.msg_ids and lview.history == ar.msg_ids
    c.purge_everything()
    assert c.history == [] and lview.history == []


def test_purge_all_refuses_while_a_task_runs_and_keeps_it(start_cluster):
    _, c = start_cluster(1)
    lview = c.load_balanced_view()
    done = lview.apply_async(noop)
    done.get(timeout=30)
    running = lview.apply_async(time.sleep, 1.5)
    try:
        c.purge_everything()
    except RuntimeError as e:
        assert "outstanding" in str(e)
    else:
        raise AssertionError("purge_everything with a task running did not refuse")
    assert c._core.task(running.msg_ids[0]) is not None
    running.get(timeout=30)
    c.purge_everything()
    assert c._core.stats()["tasks"] == 0


def test_a_dropped_view_is_not_kept_alive_by_the_client(start_cluster):
    import gc
    import weakref

    _, c = start_cluster(1)
    view = c.load_balanced_view()
    assert isinstance(view, LoadBalancedView)
    ref = weakref.ref(view)
    del view
    gc.collect()
    assert ref() is None
    assert len(c._views) == 0
