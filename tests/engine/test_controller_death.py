"""SIGKILL the REAL corral controller while a REAL corral engine runs a task: the engine
notices within seconds (its heartbeat connection closed and stayed down), interrupts the
task, logs why and exits with status 3. A task that ignores the interrupt is cut off a
bounded time later."""

from __future__ import annotations

import signal
import time

import pytest
from cluster_processes import Processes, corral_engine_argv, start_corral_controller, wait_for

import corral

#: Generous bound for the test (2 busy cores); the figure itself is printed.
EXIT_WITHIN = 30.0


@pytest.fixture
def cluster(tmp_path, request):
    procs = Processes(tmp_path)
    profile_dir = tmp_path / "profile"
    profile_dir.mkdir()
    client = None
    try:
        controller = start_corral_controller(procs, profile_dir)
        engine = procs.start("engine", corral_engine_argv(profile_dir))
        client = corral.Client(profile_dir=str(profile_dir), timeout=30)
        wait_for(lambda: len(client.ids) == 1, 60, "the engine to register")
        yield client, procs, controller, engine
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(procs.report())
        if client is not None:
            client.close()
        procs.stop_all()


def started(procs: Processes, marker: str) -> bool:
    return marker in procs.log("engine")


def kill_controller_and_time_the_engine(procs, controller, engine) -> float:
    controller.send_signal(signal.SIGKILL)  # the controller this test started
    controller.wait(10)
    t0 = time.monotonic()
    code = engine.wait(EXIT_WITHIN)
    took = time.monotonic() - t0
    print(f"engine exited {took:.2f} s after the controller's SIGKILL (status {code})")
    assert code == 3, procs.log("engine")
    return took


def test_engine_exits_soon_after_the_controller_dies_mid_task(cluster):
    client, procs, controller, engine = cluster

    def long_task():
        import sys
        import time

        print("task started", file=sys.__stderr__, flush=True)
        time.sleep(300)

    client[0].apply_async(long_task)
    wait_for(lambda: "task started" in procs.log("engine"), 30, "the task to start")
    took = kill_controller_and_time_the_engine(procs, controller, engine)
    assert took < EXIT_WITHIN
    log = procs.log("engine")
    assert "closed the heartbeat connection" in log, log
    assert "interrupting the task" in log and "controller lost" in log, log
    assert "did not stop" not in log, "the interrupt did not end the task"


def test_engine_exits_when_the_controller_dies_while_idle(cluster):
    client, procs, controller, engine = cluster
    assert client[0].apply_sync(lambda: 5) == 5
    kill_controller_and_time_the_engine(procs, controller, engine)
    assert "controller lost: the controller closed the heartbeat connection" in procs.log("engine")


def test_a_task_that_ignores_the_interrupt_is_cut_off(cluster):
    client, procs, controller, engine = cluster

    def stubborn():
        import sys
        import time

        print("stubborn started", file=sys.__stderr__, flush=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                time.sleep(0.1)
            except KeyboardInterrupt:
                print("ignoring the interrupt", file=sys.__stderr__, flush=True)

    client[0].apply_async(stubborn)
    wait_for(lambda: "stubborn started" in procs.log("engine"), 30, "the task to start")
    took = kill_controller_and_time_the_engine(procs, controller, engine)
    log = procs.log("engine")
    assert "did not stop" in log, log
    assert took < EXIT_WITHIN
