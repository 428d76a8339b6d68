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
