"""``abort()`` with no jobs aborts what is queued on the engines so far, and nothing sent
after it: the next task on each engine runs."""


def one():
    return 1


def test_abort_everything_queued_spares_the_tasks_sent_after_it(start_cluster):
    _, c = start_cluster(2)
    dview = c[:]
    assert dview.apply_sync(one) == [1, 1]
    c.abort(block=True)  # nothing queued: aborts nothing
    assert dview.apply_async(one).get(timeout=30) == [1, 1]
    lview = c.load_balanced_view()
    assert [lview.apply_async(one).get(timeout=30) for _ in range(4)] == [1] * 4
