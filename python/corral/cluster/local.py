"""Local processes: the launcher family for controllers and engines on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class LocalProcess:
    """One child process with its output in a log file.

    `detach=True` starts it in its own session, so it outlives the command that started it
    (`corral cluster start --daemonize`).
    """

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None, detach: bool = False):
        self.args = args
        self.log_path = Path(log_path)
        self.env = env
        self.detach = detach
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> "LocalProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=self.detach,
            )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> bool:
        """True once the process has exited, False if it still runs after `timeout`."""
        if self.process is None:
            return True
        try:
            self.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        if not self.running():
            return
        self.signal(signal.SIGTERM)
        if not self.wait(timeout):
            self.signal(signal.SIGKILL)
            self.wait(timeout)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class RecordedProcess:
    """A process that another command started, known from a cluster file by pid.

    The start time recorded with it tells a reused pid from the original process, so a
    stale cluster file never makes `stop` signal a stranger.
    """

    def __init__(self, pid: int, log_path: str | Path | None = None, create_time: float | None = None):
        self.pid = int(pid)
        self.log_path = Path(log_path) if log_path else None
        self.create_time = create_time

    @classmethod
    def from_dict(cls, record: dict) -> "RecordedProcess":
        return cls(record["pid"], record.get("log"), record.get("create_time"))

    def to_dict(self) -> dict:
        return {"pid": self.pid, "log": str(self.log_path) if self.log_path else None,
                "create_time": self.create_time}

    def running(self) -> bool:
        return _same_process_alive(self.pid, self.create_time)

    def signal(self, sig: int) -> None:
        if self.running():
            _signal_pid(self.pid, sig)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        if not self.running():
            return
        self.signal(signal.SIGTERM)
        if not self.wait(timeout):
            self.signal(signal.SIGKILL)
            self.wait(timeout)


def process_record(proc: "LocalProcess | RecordedProcess") -> dict:
    """pid, log and start time of a process, for a cluster file."""
    return {"pid": proc.pid, "log": str(proc.log_path) if proc.log_path else None,
            "create_time": create_time(proc.pid)}


def create_time(pid: int | None) -> float | None:
    """When `pid` started (psutil's clock), or None if it is gone."""
    import psutil

    try:
        return psutil.Process(pid).create_time() if pid else None
    except psutil.Error:
        return None


def _same_process_alive(pid: int, started: float | None) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _exists(pid)  # reap it if it is our child
            return False
        return started is None or abs(proc.create_time() - started) < 1.0
    except psutil.Error:
        return False


def stop_pids(pids: list[int], timeout: float = 5.0) -> None:
    """Stop processes this tool started earlier (read back from a cluster file)."""
    alive = [pid for pid in pids if _signal_pid(pid, signal.SIGTERM)]
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _exists(pid)]
        if alive:
            time.sleep(0.02)
    for pid in alive:
        _signal_pid(pid, signal.SIGKILL)


def _signal_pid(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _exists(pid: int) -> bool:
    try:
        # Reap it if it is our child; otherwise just probe it.
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    return _signal_pid(pid, 0)


def corral_command(*args: str) -> list[str]:
    """`corral <args>` run by this interpreter, so the child uses the same install."""
    return [sys.executable, "-m", "corral", *args]
