"""The contract between `Cluster` and the places engines run (local processes, an MPI
world, SSH hosts, a batch scheduler's job): one `EngineSetLauncher` per `start_engines`
call. Launchers are chosen by name as ipyparallel chooses them (`Cluster(engines='mpi')`);
the names resolve lazily, so a launcher's optional dependencies load only when it is used.
"""

from __future__ import annotations

import abc
import importlib
from pathlib import Path
from typing import ClassVar

from corral.cluster.local import corral_command

#: Launcher names (ipyparallel's, case-insensitive) → "module:Class".
ENGINE_LAUNCHERS: dict[str, str] = {
    "local": "corral.cluster.local_launcher:LocalEngineSetLauncher",
    "mpi": "corral.cluster.mpi:MPIEngineSetLauncher",
    "mpiexec": "corral.cluster.mpi:MPIEngineSetLauncher",
    "ssh": "corral.cluster.ssh:SSHEngineSetLauncher",
    "slurm": "corral.cluster.batch:SlurmEngineSetLauncher",
    "pbs": "corral.cluster.batch:PBSEngineSetLauncher",
    "sge": "corral.cluster.batch:SGEEngineSetLauncher",
    "lsf": "corral.cluster.batch:LSFEngineSetLauncher",
}


class EngineSetExited(RuntimeError):
    """Engines of a set exited (or its job ended) before the cluster had them all: raised
    by `Cluster.wait_for_engines` at once, with what the launcher saw, instead of waiting
    out the timeout (the controller's heartbeat would notice only after ~30 s)."""


class EngineSetLauncher(abc.ABC):
    """Starts, signals and stops one set of engines.

    `start` returns once the engines are launched, not registered: the cluster waits for
    registration through its client. `stop` leaves no process (and no batch job) behind.
    `to_dict`/`from_dict` let `corral cluster stop` stop a set that another process started.
    """

    #: The name it is chosen by, e.g. "mpi".
    kind: ClassVar[str]

    def __init__(
        self,
        *,
        engine_file: Path,
        profile_dir: Path,
        cluster_id: str,
        log_dir: Path,
        log_level: str = "warning",
        engine_args: list[str] | tuple = (),
        **options,
    ):
        self.engine_file = Path(engine_file)
        self.profile_dir = Path(profile_dir)
        self.cluster_id = cluster_id
        self.log_dir = Path(log_dir)
        self.log_level = log_level
        self.engine_args = list(engine_args)
        self.options = options
        #: How many engines the last `start` launched.
        self.n = 0
        #: Variables for the engines' environment, set by `Cluster` before `start`; e.g.
        #: `IPP_CONNECTION_INFO` (the engine connection file's JSON, which engines read
        #: instead of a file, as ipyparallel's launchers pass it). A launcher that cannot
        #: pass them on may ignore them: its engines then read `--file`.
        self.environment: dict[str, str] = {}
        self._stop_callbacks: list = []

    def on_stop(self, callback) -> None:
        """Call `callback(info)` when an engine of the set exits on its own (ipyparallel's
        launcher hook; `info` has `pid`, `exit_code`, `log`). Launchers that watch their
        processes (local) call it from their watcher thread."""
        self._stop_callbacks.append(callback)

    def _notify_stop(self, info: dict) -> None:
        for callback in list(self._stop_callbacks):
            try:
                callback(info)
            except Exception:  # a user's callback must not stop the watcher
                import logging

                logging.getLogger("corral.cluster").exception("on_stop callback %r failed", callback)

    def base_record(self) -> dict:
        """What every launcher's `to_dict` starts with."""
        return {
            "kind": self.kind,
            "n": self.n,
            "cluster_id": self.cluster_id,
            "profile_dir": str(self.profile_dir),
            "engine_file": str(self.engine_file),
            "log_dir": str(self.log_dir),
            "log_level": self.log_level,
        }

    def engine_command(self, *extra: str) -> list[str]:
        """`corral engine` for this cluster, run by this interpreter."""
        return corral_command(
            "engine", "--file", str(self.engine_file), "--log-level", self.log_level,
            *self.engine_args, *extra,
        )

    @abc.abstractmethod
    def start(self, n: int) -> None:
        """Launch `n` engines; return without waiting for them to register."""

    @abc.abstractmethod
    def stop(self, timeout: float = 5.0) -> None:
        """Stop every engine of the set (SIGTERM, then SIGKILL after `timeout`)."""

    @abc.abstractmethod
    def signal(self, sig: int) -> None:
        """Send `sig` to every engine of the set."""

    @abc.abstractmethod
    def running(self) -> bool:
        """Whether any engine of the set (or its job) is still running."""

    @abc.abstractmethod
    def to_dict(self) -> dict:
        """A JSON-able record from which `from_dict` can signal and stop the set."""

    def failure(self) -> str | None:
        """What went wrong if engines of the set have exited on their own (which ones,
        their exit code and the end of their log), else None. Launchers that cannot see
        their engines exit return None; the controller's heartbeat then tells."""
        return None

    @classmethod
    @abc.abstractmethod
    def from_dict(cls, record: dict) -> "EngineSetLauncher":
        """The launcher `to_dict` described, able to `signal`, `stop` and `running`."""


def find_engine_launcher(name_or_class: str | type) -> type[EngineSetLauncher]:
    """The launcher class for a name ('mpi', 'ssh', ...), a "module:Class" path, or a class."""
    if isinstance(name_or_class, type):
        return name_or_class
    spec = ENGINE_LAUNCHERS.get(name_or_class.lower(), name_or_class)
    if ":" not in spec:
        raise ValueError(
            f"unknown engine launcher {name_or_class!r}: choose one of "
            f"{sorted(ENGINE_LAUNCHERS)} or pass 'module:Class'"
        )
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)
