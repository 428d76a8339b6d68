"""Stock ipyparallel 9.2 engines and client against corral's Rust controller.

Functions sent to engines are `@ipp.interactive` (module `__main__`), so engines do
not need to import this test module.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ipp = pytest.importorskip("ipyparallel")

import remote_functions as rf  # noqa: E402

N_ENGINES = 2


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


class Processes:
    """Starts processes with one log file each; kills exactly those on teardown."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.logdir)
        log.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def stop_all(self) -> None:
        # Engines first, controller last (it was started first).
        for _, proc in reversed(self.procs):
            self.stop(proc)


@pytest.fixture
def cluster(tmp_path: Path):
    procs = Processes(tmp_path)
    client_file = tmp_path / "security" / "ipcontroller-client.json"
    engine_file = tmp_path / "security" / "ipcontroller-engine.json"
    controller = procs.start(
        "controller",
        [sys.executable, "-m", "corral", "controller", "--profile-dir", str(tmp_path), "--ip", "127.0.0.1"],
    )
    client = None
    try:
        _wait_for(lambda: client_file.exists() and engine_file.exists(), 30, "connection files")
        for i in range(N_ENGINES):
            procs.start(
                f"engine{i}",
                [sys.executable, "-m", "ipyparallel.engine", f"--profile-dir={tmp_path}", "--log-level=DEBUG"],
            )
        client = ipp.Client(profile_dir=str(tmp_path))
        client.wait_for_engines(N_ENGINES, timeout=60)
        yield client, controller, procs, client_file
    finally:
        if client is not None:
            client.close()
        procs.stop_all()
        # Captured output: pytest shows it only when the test failed.
        print(f"cluster logs (one per process) are in {tmp_path}")














def test_stock_engines_and_client_on_corral_controller(cluster):
    c, controller, procs, client_file = cluster
    assert sorted(c.ids) == list(range(N_ENGINES))
    dv = c[:]
    dv.block = False

    ar = dv.apply_async(rf.publish_once)
    assert ar.get(timeout=30) == ["done"] * N_ENGINES
    _wait_for(lambda: ar.data == [{"a": "hi"}] * N_ENGINES, 10, "published data")

    ar = dv.apply_async(rf.publish_loop)
    ar.get(timeout=30)
    _wait_for(lambda: all(d.get("i") == 4 for d in ar.data), 10, f"last publication, have {ar.data}")

    ar = dv.apply_async(rf.say_hello)
    assert ar.get(timeout=30) == [1] * N_ENGINES
    _wait_for(lambda: all("hello from an engine" in s for s in ar.stdout), 10, "stdout")

    ar = dv.apply_async(rf.fail)
    with pytest.raises((ipp.error.RemoteError, ipp.error.CompositeError)) as info:
        ar.get(timeout=30)
    assert "boom" in str(info.value)

    lview = c.load_balanced_view()
    assert lview.apply_sync(rf.double, 21) == 42
    assert sorted(lview.map_sync(rf.inc, range(6))) == [1, 2, 3, 4, 5, 6]

    bview = c.broadcast_view()
    assert bview.apply_sync(rf.double, 5) == [10] * N_ENGINES
    rf.check_coalescing_broadcast(c, N_ENGINES)

    status = c.queue_status()
    for eid in c.ids:
        assert set(status[eid]) == {"queue", "completed", "tasks"}
        assert status[eid]["completed"] >= 4
    assert status["unassigned"] == 0

    # The controller stops cleanly on SIGTERM and removes its files.
    c.close()
    assert procs.stop(controller) == 0
    assert not client_file.exists()
