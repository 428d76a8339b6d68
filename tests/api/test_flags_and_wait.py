"""Load-balanced flags (after, follow, timeout, retries through set_flags/temp_flags) and
waiting on several requests at once (Client.wait, View.wait, history, outstanding)."""

import os
import time

import pytest

import corral
from corral.error import RemoteError


def finish_time(seconds):
    import time

    time.sleep(seconds)
    return time.time()


def start_time():
    import time

    return time.time()


def fail():
    raise ValueError("meant to fail")


def test_after_waits_for_the_tasks_it_names(client4):
    lview = client4.load_balanced_view()
    first = lview.apply_async(finish_time, 0.5)
    with lview.temp_flags(after=first):
        second = lview.apply_async(start_time)
    assert lview.after is None, "temp_flags restores the view's flags"
    assert second.get(timeout=30) >= first.get(timeout=30)


def test_follow_runs_where_the_named_task_ran(client4):
    lview = client4.load_balanced_view()
    where = lview.apply_async(os.getpid)
    where.get(timeout=30)
    lview.set_flags(follow=where)
    pids = [lview.apply_async(os.getpid) for _ in range(6)]
    assert {ar.get(timeout=30) for ar in pids} == {where.get()}
    lview.set_flags(follow=None)
    spread = [lview.apply_async(finish_time, 0.2) for _ in range(4)]
    for ar in spread:
        ar.get(timeout=30)
    assert len({ar.metadata["engine_id"] for ar in spread}) > 1, "without follow, spread out"


def test_dependency_on_failure_and_impossible_dependency(client4):
    lview = client4.load_balanced_view()
    failed = lview.apply_async(fail)
    with pytest.raises(RemoteError):
        failed.get(timeout=30)
    on_failure = corral.Dependency(failed, success=False, failure=True)
    with lview.temp_flags(after=on_failure):
        assert lview.apply_sync(lambda: "ran after a failure") == "ran after a failure"
    with lview.temp_flags(after=failed):  # success only: can never be met
        with pytest.raises(RemoteError) as info:
            lview.apply_sync(lambda: "never")
    assert info.value.ename == "ImpossibleDependency"


def test_timeout_fails_a_task_whose_dependencies_wait_too_long(client4):
    lview = client4.load_balanced_view()
    slow = lview.apply_async(finish_time, 3)
    with lview.temp_flags(after=slow, timeout=0.2):
        ar = lview.apply_async(start_time)
    with pytest.raises(RemoteError) as info:
        ar.get(timeout=30)
    assert info.value.ename == "TaskTimeout"


def test_set_flags_checks_names_and_types(client4):
    lview = client4.load_balanced_view()
    with pytest.raises(KeyError):
        lview.set_flags(colour="red")
    with pytest.raises(TypeError):
        lview.set_flags(timeout="soon")
    with pytest.raises(TypeError):
        lview.set_flags(retries=1.5)
    with pytest.raises(TypeError):
        lview.set_flags(after=[3.5])
    lview.set_flags(retries=2, block=True)
    assert (lview.retries, lview.block) == (2, True)
    dv = client4[:]
    with dv.temp_flags(block=True):
        assert dv.apply(lambda: 1) == [1] * 4
    assert dv.block is False


def test_client_and_view_wait(client4):
    c = client4
    dv = c[:]
    lview = c.load_balanced_view()
    direct = dv.apply_async(finish_time, 0.5)
    balanced = lview.apply_async(finish_time, 0.5)
    assert c.outstanding >= set(direct.msg_ids) | set(balanced.msg_ids)
    assert c.wait(timeout=0.05) is False
    assert dv.wait(timeout=-1) is True
    assert direct.ready() and dv.outstanding == set()
    assert lview.wait([balanced], timeout=30) is True
    assert c.wait() is True and c.outstanding == set()
    assert c.history[-len(direct.msg_ids) - 1:] == [*direct.msg_ids, *balanced.msg_ids]
    assert lview.history == balanced.msg_ids
    assert c.wait(0) is True, "an int is an index into history"
    assert c.wait(["no-such-msg-id"], timeout=1) is True, "unknown ids are not waited for"
    with pytest.raises(TypeError):
        c.wait([1.5])


def test_views_take_their_flags_as_keywords_and_warn_of_unknown_ones(client4):
    # ipyparallel's views are traitlets objects: keywords that are flags are set, others
    # are ignored with a warning. ipyparallel's "memmap Broadcast" example notebook calls
    # `rc.broadcast_view(coalescing=True)`, which raised TypeError here before.
    direct = client4.direct_view(label="mine", block=True)
    assert (direct.label, direct.block) == ("mine", True)
    assert direct.apply(lambda: 5) == [5] * 4
    balanced = client4.load_balanced_view(label="lb", retries=2)
    assert (balanced.label, balanced.retries) == ("lb", 2)
    with pytest.warns(RuntimeWarning, match="has no option 'coalescing'.*'is_coalescing'") as w:
        bview = client4.broadcast_view(coalescing=True)
    assert w[0].filename == __file__, "the warning points at the caller's line"
    assert bview.is_coalescing is False
    assert bview.apply_sync(lambda: 6) == [6] * 4
    with pytest.raises(TypeError, match="Invalid type for retries"):
        client4.load_balanced_view(retries="x")


def test_the_client_s_block_is_its_views_default_and_set_flags_returns_the_view(client4):
    # ipyparallel's inter-engine example sets `rc.block = True`, then uses `rc[:]`; its
    # task-label example chains `view.set_flags(label=...).map_async(...)`.
    try:
        client4.block = True
        view = client4[:]
        assert view.block is True and view.apply(lambda: 1) == [1] * 4
        assert client4.load_balanced_view().block is True
        assert client4.direct_view(block=False).block is False, "an explicit block wins"
        assert client4.clear(targets=0) is None, "the client's own calls block too"
    finally:
        client4.block = False
    assert client4[:].block is False
    lview = client4.load_balanced_view()
    ar = lview.set_flags(label="chained").map_async(lambda x: x + 1, [1, 2])
    assert ar.get(timeout=30) == [2, 3]
    assert lview.label == "chained"
