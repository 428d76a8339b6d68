"""The processes of hand-assembled test clusters (stock and corral peers mixed): each runs in
its own session with one log file in the test's tmp dir, and teardown stops exactly those
process groups, by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def wait_for(predicate, timeout: float, what: str) -> None:
    """Polls `predicate` until it is true; raises TimeoutError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def living_children(*names: str) -> set[int]:
    """Pids of this process's living descendants with one of `names` (all if none given).
    A child may exit while it is being looked at, and an orphan reparented to this process
    (tests/client/conftest.py makes it a child subreaper) may be reaped at any moment:
    both count as gone, as do zombies."""
    import psutil

    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if (not names or proc.name() in names) and proc.status() != psutil.STATUS_ZOMBIE:
                found.add(proc.pid)
        except psutil.Error:
            continue
    return found


class Processes:
    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.logdir, env=env, start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def stop(self, name: str, timeout: float = 10) -> int:
        """SIGTERM to one process group, SIGKILL after `timeout`; the leader's exit code."""
        proc = self.procs[name]
        _signal_group(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            return proc.wait(5)

    def stop_all(self, grace: float = 10) -> None:
        """SIGTERM to every group, engines (started later) first; SIGKILL after `grace`."""
        procs = list(self.procs.values())
        for proc in reversed(procs):
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in procs:
            _signal_group(proc, signal.SIGKILL)  # also any child the leader left behind
            proc.wait(5)

    def log(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")

    def report(self) -> str:
        """Every log's path and tail, for a failed test's output."""
        parts = [f"cluster logs (one per process) are in {self.logdir}"]
        for name in self.procs:
            parts.append(f"--- {name}.log (tail)\n{self.log(name)[-3000:]}")
        return "\n".join(parts)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _wait_for_connection_files(profile_dir: Path) -> None:
    security = profile_dir / "security"
    wait_for(
        lambda: (security / "ipcontroller-client.json").exists()
        and (security / "ipcontroller-engine.json").exists(),
        30, "connection files",
    )


def start_corral_controller(procs: Processes, profile_dir: Path) -> subprocess.Popen:
    proc = procs.start(
        "controller",
        [sys.executable, "-m", "corral", "controller", "--profile-dir", str(profile_dir),
         "--ip", "127.0.0.1", "--log-level", "info"],
    )
    _wait_for_connection_files(profile_dir)
    return proc


def start_stock_controller(procs: Processes, profile_dir: Path) -> subprocess.Popen:
    proc = procs.start(
        "controller",
        [sys.executable, "-m", "ipyparallel.controller", "--profile-dir", str(profile_dir),
         "--ip", "127.0.0.1", "--log-level", "20"],
    )
    _wait_for_connection_files(profile_dir)
    return proc


def corral_engine_argv(profile_dir: Path) -> list[str]:
    return [sys.executable, "-m", "corral", "engine", "--profile-dir", str(profile_dir),
            "--log-level", "INFO"]


def stock_engine_argv(profile_dir: Path) -> list[str]:
    return [sys.executable, "-m", "ipyparallel.engine", f"--profile-dir={profile_dir}",
            "--log-level=DEBUG"]
