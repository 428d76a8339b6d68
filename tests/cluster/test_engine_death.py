"""A corral engine killed mid-task: its tasks become errors the client sees at once (the
controller notices the closed connections), never a hang. The default 3 s heartbeat
period is kept, so the heartbeat alone would need ~33 s."""

import os
import signal
import time

import pytest

from corral.error import EngineError

# Measured ~0.5-0.6 s locally; generous for a loaded 2-core machine.
NOTICED_WITHIN = 3.0


def _work(seconds):
    import time

    time.sleep(seconds)
    return "done"


def _wait_ids(client, ids, timeout=30):
    deadline = time.monotonic() + timeout
    while client.ids != ids and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.ids == ids


def test_killed_engine_turns_its_direct_task_into_an_engine_error_at_once(start_cluster):
    _, client = start_cluster(2)
    pids = client[:].apply_sync(os.getpid)
    doomed = client[0].apply_async(_work, 10)
    other = client[1].apply_async(_work, 1)
    time.sleep(0.5)
    os.kill(pids[0], signal.SIGKILL)  # an engine process this test's cluster started
    t0 = time.monotonic()
    with pytest.raises(EngineError) as info:
        doomed.get(timeout=60)
    took = time.monotonic() - t0
    print(f"direct: EngineError {took:.3f} s after SIGKILL")
    assert took < NOTICED_WITHIN
    assert "died" in str(info.value)
    # The other engine finished its task and keeps serving.
    assert other.get(timeout=30) == "done"
    _wait_ids(client, [1])
    assert client[1].apply_sync(lambda: 3) == 3


def test_killed_engine_turns_its_load_balanced_task_into_an_engine_error_at_once(start_cluster):
    _, client = start_cluster(2)
    pids = dict(zip(client.ids, client[:].apply_sync(os.getpid)))
    lview = client.load_balanced_view()
    ar = lview.apply_async(_work, 10)
    deadline = time.monotonic() + 10
    running_on = []
    while not running_on and time.monotonic() < deadline:
        status = client.queue_status()
        running_on = [eid for eid in client.ids if status[eid]["tasks"] == 1]
        time.sleep(0.05)
    assert len(running_on) == 1, status
    victim = running_on[0]
    os.kill(pids[victim], signal.SIGKILL)  # an engine process this test's cluster started
    t0 = time.monotonic()
    with pytest.raises(EngineError):
        ar.get(timeout=60)
    took = time.monotonic() - t0
    print(f"load-balanced: EngineError {took:.3f} s after SIGKILL")
    assert took < NOTICED_WITHIN
    survivor = [eid for eid in client.ids if eid != victim]
    _wait_ids(client, survivor)
    assert lview.apply_sync(lambda: 4) == 4
