"""A corral engine killed mid-task: its tasks become errors the client sees, never a hang."""

import os
import signal
import time

import pytest

from corral.error import CompositeError, EngineError, RemoteError


def test_killed_engine_turns_its_task_into_an_engine_error(start_cluster):
    # A short heartbeat so the controller declares the engine dead within seconds.
    _, client = start_cluster(2, controller_args=["--hb-period", "200"])
    pids = client[:].apply_sync(os.getpid)

    def work(seconds):
        import time

        time.sleep(seconds)
        return "done"

    ar = client[:].apply_async(work, 3)
    time.sleep(0.5)
    os.kill(pids[0], signal.SIGKILL)  # an engine process this test's cluster started
    t0 = time.monotonic()
    with pytest.raises(CompositeError) as info:
        ar.get(timeout=60)
    assert time.monotonic() - t0 < 30
    assert info.value.elist[0][0] == "EngineError"
    assert "died" in info.value.elist[0][1]
    # The other engine finished its task and keeps serving.
    assert ar.metadata[1]["status"] == "ok"
    deadline = time.monotonic() + 30
    while client.ids != [1] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.ids == [1]
    assert client[1].apply_sync(lambda: 3) == 3
