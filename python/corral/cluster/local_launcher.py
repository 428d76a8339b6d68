"""Engines as processes on this machine: `Cluster(engines='local')`, the default.

Each engine is one `corral engine` process with its own log. A watcher thread notices an
engine that exits while the set is not being stopped at once (the controller's heartbeat
would take ~30 s on other hosts): it logs a warning with the end of the engine's log and
calls the `on_stop` callbacks; with `auto_restart=True` it starts a fresh engine in its
place (registering under a new engine id, as a restarted ipengine does).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from corral.cluster.launcher import EngineSetLauncher
from corral.cluster.local import LocalProcess, RecordedProcess, corral_command, process_record

log = logging.getLogger("corral.cluster")


class LocalEngineSetLauncher(EngineSetLauncher):
    """Options (`engine_launcher_options`): `detach` (engines outlive this process, for
    `corral cluster start --daemonize`), `auto_restart` (replace engines that die),
    `max_restarts` (per set, default 10), `restart_check` (seconds between checks)."""

    kind = "local"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.detach = bool(self.options.get("detach", False))
        self.auto_restart = bool(self.options.get("auto_restart", False))
        self.max_restarts = int(self.options.get("max_restarts", 10))
        self.restart_check = float(self.options.get("restart_check", 0.2))
        #: One entry per engine slot: a LocalProcess, or a RecordedProcess after from_dict.
        self.processes: list[LocalProcess | RecordedProcess] = []
        #: How many engines the watcher has started in place of dead ones.
        self.restarts = 0
        #: Pids of engines whose exit the watcher has reported.
        self._reported: set[int] = set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def _command(self) -> list[str]:
        if "IPP_CONNECTION_INFO" in self.environment:
            # The engine reads its connection info from the environment (ipyparallel's
            # launchers do the same), so no file needs to be reachable.
            return corral_command("engine", "--log-level", self.log_level, *self.engine_args)
        return self.engine_command()

    def _start_one(self) -> LocalProcess:
        stamp = f"{os.getpid()}-{time.monotonic_ns()}"
        path = self.log_dir / f"corral-engine-{self.cluster_id or 'default'}-{stamp}.log"
        env = dict(os.environ, **self.environment) if self.environment else None
        return LocalProcess(self._command(), path, env=env, detach=self.detach).start()

    def start(self, n: int) -> None:
        self._stopping.clear()
        with self._lock:
            self.processes = [self._start_one() for _ in range(n)]
        self.n = n
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="corral-engine-watcher", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        """Report engines that exit on their own (crash, SIGKILL, controller gone) and,
        with auto_restart, replace them."""
        while not self._stopping.wait(self.restart_check):
            with self._lock:
                for i, proc in enumerate(self.processes):
                    if proc.running() or self._stopping.is_set() or proc.pid in self._reported:
                        continue
                    code = getattr(getattr(proc, "process", None), "returncode", None)
                    info = {"pid": proc.pid, "exit_code": code, "log": str(proc.log_path)}
                    if self.auto_restart and self.restarts < self.max_restarts:
                        log.warning("engine process %s exited (code %s); starting a new one", proc.pid, code)
                        self.processes[i] = self._start_one()
                        self.restarts += 1
                    else:
                        log.warning("engine process %s exited (code %s); its log %s ends with:\n%s",
                                    proc.pid, code, proc.log_path, proc.log_tail(10))
                        self._reported.add(proc.pid)
                    self._notify_stop(info)

    def failure(self) -> str | None:
        if self.auto_restart and self.restarts < self.max_restarts:
            return None  # the watcher replaces them
        dead = [p for p in self.processes if isinstance(p, LocalProcess) and not p.running()]
        if not dead or self._stopping.is_set():
            return None
        first = dead[0]
        return (f"{len(dead)} of {len(self.processes)} engine process(es) exited, e.g. pid {first.pid} "
                f"with code {first.process.returncode}; its log {first.log_path} ends with:\n{first.log_tail()}")

    def signal(self, sig: int) -> None:
        for proc in self.processes:
            proc.signal(sig)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout)
            self._watcher = None
        with self._lock:
            procs = list(self.processes)
        for proc in procs:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            if not proc.wait(max(0.0, deadline - time.monotonic())):
                proc.signal(signal.SIGKILL)
                proc.wait(timeout)

    def running(self) -> bool:
        return any(p.running() for p in self.processes)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def to_dict(self) -> dict:
        return {
            **self.base_record(),
            "engine_args": self.engine_args,
            "processes": [process_record(p) for p in self.processes],
        }

    @classmethod
    def from_dict(cls, record: dict) -> "LocalEngineSetLauncher":
        self = cls(
            engine_file=record["engine_file"], profile_dir=record["profile_dir"],
            cluster_id=record.get("cluster_id", ""), log_dir=record["log_dir"],
            log_level=record.get("log_level", "warning"), engine_args=record.get("engine_args", ()),
        )
        self.processes = [RecordedProcess.from_dict(p) for p in record.get("processes", [])]
        self.n = record.get("n", len(self.processes))
        return self
