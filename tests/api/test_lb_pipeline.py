"""The load balancer's high-water mark (``corral controller --hwm N|auto``, ipyparallel's
``--TaskScheduler.hwm=N``): several tasks outstanding per engine, results still right, and
an engine killed while holding several tasks turns every one of them into an EngineError.
Real controller and engine processes."""

import os
import signal
import time

import pytest

from corral.client import remote_helpers
from corral.client.map import ChunkPacker
from corral.error import EngineError
from corral.serialize import pack_apply_message

# Measured ~0.5-0.6 s for one task (tests/cluster/test_engine_death.py); generous here.
NOTICED_WITHIN = 5.0


def _work(seconds):
    import time

    time.sleep(seconds)
    return "done"


def _double(x):
    return 2 * x


def _stamp_after(seconds):
    import time

    time.sleep(seconds)
    return time.time()


def _assigned(client):
    """Tasks the controller's hub has placed on each engine and not seen finish."""
    return {eid: client.queue_status()[eid]["tasks"] for eid in client.ids}


def _wait_for(predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _three_long_tasks_go_one_per_engine(client, lview):
    """On 2 engines: two of three 2 s tasks run at once, the third waits in the scheduler."""
    ars = [lview.apply_async(_work, 2) for _ in range(3)]
    _wait_for(lambda: sum(_assigned(client).values()) == 2)
    assert _assigned(client) == {eid: 1 for eid in client.ids}
    assert client.queue_status()["unassigned"] == 1
    assert [ar.get(timeout=60) for ar in ars] == ["done"] * 3


def test_a_map_packs_its_function_once_and_sends_the_same_frames():
    packer = ChunkPacker(_double)
    plain = [[1, 2.5, "s", None, True], ("t", -(2**80)), range(3, 9, 2)]
    other = [[b"x" * 5000], [_double, 1], [[1, 2]], list(range(3))]
    for chunks in (plain, other, [[]]):
        want = pack_apply_message(remote_helpers.map_chunk, (_double, *chunks), {})
        assert [bytes(f) for f in packer.pack(chunks)] == [bytes(f) for f in want]


@pytest.mark.parametrize("spelling", [["--hwm", "2"], ["--TaskScheduler.hwm=2"]])
def test_hwm_2_places_two_tasks_on_each_engine(start_cluster, spelling):
    _, client = start_cluster(2, controller_args=spelling)
    lview = client.load_balanced_view()
    ars = [lview.apply_async(_work, 3) for _ in range(5)]
    # Four tasks go out at once, two per engine; the fifth waits in the scheduler.
    _wait_for(lambda: sum(_assigned(client).values()) == 4)
    assert _assigned(client) == {eid: 2 for eid in client.ids}
    assert client.queue_status()["unassigned"] == 1
    assert [ar.get(timeout=60) for ar in ars] == ["done"] * 5


def test_default_hwm_is_one_task_per_engine(start_cluster):
    _, client = start_cluster(2)
    lview = client.load_balanced_view()
    _three_long_tasks_go_one_per_engine(client, lview)


def test_default_hwm_pipelines_short_tasks_but_not_the_long_ones_sent_after(start_cluster):
    """``--hwm auto`` (the default) sends an engine several tasks at once only while its
    tasks are short; after a pause, long tasks go out one per engine, as with ``--hwm 1``."""
    _, client = start_cluster(2)
    lview = client.load_balanced_view()
    short = [lview.apply_async(_double, i) for i in range(3000)]
    assert [ar.get(timeout=120) for ar in short] == [2 * i for i in range(3000)]
    time.sleep(0.2)
    _three_long_tasks_go_one_per_engine(client, lview)


def test_hwm_1_is_ipyparallel_s_one_task_per_engine_after_short_tasks_too(start_cluster):
    _, client = start_cluster(2, controller_args=["--TaskScheduler.hwm=1"])
    lview = client.load_balanced_view()
    short = [lview.apply_async(_double, i) for i in range(500)]
    assert [ar.get(timeout=120) for ar in short] == [2 * i for i in range(500)]
    _three_long_tasks_go_one_per_engine(client, lview)


def test_unlimited_hwm_keeps_results_and_dependencies_right(start_cluster):
    _, client = start_cluster(2, controller_args=["--hwm", "0"])
    lview = client.load_balanced_view()
    ars = [lview.apply_async(_double, i) for i in range(2000)]
    assert [ar.get(timeout=120) for ar in ars] == [2 * i for i in range(2000)]
    assert lview.map_sync(_double, range(3000)) == [2 * i for i in range(3000)]
    # `after` still waits for the dependency's reply, not for its placement.
    first = lview.apply_async(_stamp_after, 1)
    with lview.temp_flags(after=[first]):
        then = lview.apply_async(_stamp_after, 0)
    assert then.get(timeout=60) >= first.get(timeout=60)


def test_an_engine_killed_with_three_tasks_fails_all_three(start_cluster):
    _, client = start_cluster(2, controller_args=["--hwm", "3"])
    pids = dict(zip(client.ids, client[:].apply_sync(os.getpid)))
    lview = client.load_balanced_view()
    ars = [lview.apply_async(_work, 30) for _ in range(6)]
    _wait_for(lambda: _assigned(client) == {eid: 3 for eid in client.ids})
    victim = client.ids[0]
    os.kill(pids[victim], signal.SIGKILL)  # an engine process this test's cluster started
    t0 = time.monotonic()
    _wait_for(lambda: sum(ar.ready() for ar in ars) == 3, timeout=60)
    took = time.monotonic() - t0
    print(f"3 EngineErrors {took:.3f} s after SIGKILL")
    assert took < NOTICED_WITHIN
    failed = [ar for ar in ars if ar.ready()]
    for ar in failed:
        with pytest.raises(EngineError):
            ar.get(timeout=1)
    assert not any(ar.ready() for ar in ars if ar not in failed), "the survivor's still run"
