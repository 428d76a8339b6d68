"""Interrupting a running task: `signal_request` (ipyparallel's `Client.send_signal`) and
`interrupt_request` on the control channel. SIGINT raises KeyboardInterrupt in the task,
which becomes an error reply; the engine serves the next task.

Sent as raw messages to a REAL engine (fake controller), and through a STOCK client with
the stock controller and with corral's.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from cluster_processes import Processes, corral_engine_argv, start_corral_controller
from fake_hub import FakeHub

ipp = pytest.importorskip("ipyparallel")


@pytest.fixture
def hub(tmp_path):
    h = FakeHub(tmp_path)
    h.start_engine()
    try:
        yield h
    finally:
        h.close()


def control(hub: FakeHub, msg_type: str, content: dict) -> dict:
    msg_id, frames = hub.request(msg_type, content)
    hub.send("control", frames)
    h, reply, _ = hub.reply_to("control", msg_id, timeout=10)
    assert h["msg_type"] == msg_type.replace("_request", "_reply")
    return reply


def start_sleeping(hub: FakeHub, seconds: int = 60) -> str:
    msg_id, frames = hub.request(
        "execute_request", {"code": f"import time\nprint('sleeping')\ntime.sleep({seconds})"})
    hub.send("mux", frames)
    time.sleep(1.5)  # let it start (no reply comes before it ends)
    return msg_id


def execute_ok(hub: FakeHub) -> None:
    msg_id, frames = hub.request("execute_request", {"code": "40 + 2"})
    hub.send("mux", frames)
    _, reply, _ = hub.reply_to("mux", msg_id, timeout=30)
    assert reply["status"] == "ok", reply


@pytest.mark.parametrize("sig", [int(signal.SIGINT), "SIGINT"])
def test_signal_request_interrupts_the_running_task(hub, sig):
    running = start_sleeping(hub)
    t0 = time.monotonic()
    assert control(hub, "signal_request", {"sig": sig}) == {"status": "ok"}
    _, reply, _ = hub.reply_to("mux", running, timeout=30)
    assert time.monotonic() - t0 < 30  # interrupted, not finished
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    execute_ok(hub)
    assert hub.proc.poll() is None


def test_interrupt_request_interrupts_the_running_task(hub):
    running = start_sleeping(hub)
    assert control(hub, "interrupt_request", {}) == {"status": "ok"}
    _, reply, _ = hub.reply_to("mux", running, timeout=30)
    assert reply["ename"] == "KeyboardInterrupt", reply
    execute_ok(hub)


def test_sigint_between_tasks_and_bad_signals_leave_the_engine_serving(hub):
    assert control(hub, "signal_request", {"sig": "SIGINT"}) == {"status": "ok"}
    time.sleep(0.5)
    bad = control(hub, "signal_request", {"sig": "SIGNOTHING"})
    assert bad["status"] == "error" and bad["ename"] == "ValueError"
    assert control(hub, "signal_request", {"sig": 0}) == {"status": "ok"}
    execute_ok(hub)
    assert "interrupt with no task running: dropped" in hub.log()


def test_an_interrupt_between_tasks_never_lands_on_the_next_task(hub):
    """An interrupt with no task running is dropped: a task sent right behind it (as a
    fuzzer or an impatient user does) runs to its end, never a KeyboardInterrupt."""
    for msg_type, content in [("interrupt_request", {}), ("signal_request", {"sig": "SIGINT"})]:
        assert control(hub, msg_type, content) == {"status": "ok"}
        msg_id, frames = hub.request("execute_request", {"code": "import time\ntime.sleep(0.5)"})
        hub.send("mux", frames)
        _, reply, _ = hub.reply_to("mux", msg_id, timeout=30)
        assert reply["status"] == "ok", reply


def test_sigkill_is_answered_before_the_engine_dies(hub):
    assert control(hub, "signal_request", {"sig": "SIGKILL"}) == {"status": "ok"}
    hub.proc.wait(10)
    assert hub.proc.returncode == -signal.SIGKILL


def remote_sleep(seconds):
    import time

    time.sleep(seconds)
    return "slept"


remote_sleep.__module__ = "__main__"


def signal_through_stock_client(client) -> None:
    """ipyparallel's own test_signal_engines, with the engines living on afterwards."""
    view = client[:]
    for sig in (signal.SIGINT, "SIGINT"):
        ar = view.apply_async(remote_sleep, 30)
        time.sleep(1.5)
        client.send_signal(sig, block=True)
        results = ar.get(timeout=20, return_exceptions=True)
        assert all(isinstance(r, ipp.error.RemoteError) for r in results), results
        assert {r.ename for r in results} == {"KeyboardInterrupt"}
    assert view.apply_sync(remote_sleep, 0) == ["slept"] * len(view)


def test_send_signal_from_stock_client_stock_controller(cluster):
    client, _, _ = cluster
    signal_through_stock_client(client)


def test_send_signal_from_stock_client_corral_controller(tmp_path: Path):
    procs = Processes(tmp_path)
    profile_dir = tmp_path / "profile"
    profile_dir.mkdir()
    client = None
    try:
        start_corral_controller(procs, profile_dir)
        for i in range(2):
            procs.start(f"engine{i}", corral_engine_argv(profile_dir))
        client = ipp.Client(profile_dir=str(profile_dir), timeout=30)
        client.wait_for_engines(2, timeout=60)
        signal_through_stock_client(client)
    except BaseException:
        print(procs.report())
        raise
    finally:
        if client is not None:
            client.close()
        procs.stop_all()


def test_sigkill_unregisters_the_engine_first(cluster):
    """The stock controller learns at once that a SIGKILLed engine is gone (it would
    otherwise wait for ten missed heartbeats, 30 s), as with ipyparallel's nanny."""
    client, procs, _ = cluster
    victim = client.ids[-1]
    client.send_signal("SIGKILL", targets=[victim], block=True)
    deadline = time.monotonic() + 10
    while victim in client.ids and time.monotonic() < deadline:
        time.sleep(0.1)
    assert victim not in client.ids
    assert client[client.ids[0]].apply_sync(remote_sleep, 0) == "slept"
