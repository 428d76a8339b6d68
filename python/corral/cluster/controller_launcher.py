"""Where the controller runs: `Cluster(controller='local'|'mpi'|'ssh'|'slurm'|'pbs'|'sge'|
'lsf')`, configured by `controller_launcher_options={...}`, chosen by name as ipyparallel
chooses its controller launchers.

A controller launcher starts one `corral controller` and, where the controller writes its
connection files elsewhere (another host over SSH), copies them back into the local
profile (`fetch_connection_files`); on a shared file system (local, MPI, batch jobs) they
are simply there. `Cluster` waits for the files, then connects. The local and MPI
launchers live here; SSH in `ssh_controller`, batch schedulers in `batch_controller`.
"""

from __future__ import annotations

import abc
import importlib
import os
import signal
import time
from pathlib import Path
from typing import ClassVar

from corral.cluster.local import LocalProcess, RecordedProcess, corral_command, process_record

#: Launcher names (ipyparallel's, case-insensitive) → "module:Class".
CONTROLLER_LAUNCHERS: dict[str, str] = {
    "local": "corral.cluster.controller_launcher:LocalControllerLauncher",
    "mpi": "corral.cluster.controller_launcher:MPIControllerLauncher",
    "mpiexec": "corral.cluster.controller_launcher:MPIControllerLauncher",
    "ssh": "corral.cluster.ssh_controller:SSHControllerLauncher",
    "slurm": "corral.cluster.batch_controller:SlurmControllerLauncher",
    "pbs": "corral.cluster.batch_controller:PBSControllerLauncher",
    "sge": "corral.cluster.batch_controller:SGEControllerLauncher",
    "lsf": "corral.cluster.batch_controller:LSFControllerLauncher",
}


class ControllerLauncher(abc.ABC):
    """Starts, signals and stops one controller.

    `controller_args` are the options after `corral controller` other than
    `--profile-dir`/`--cluster-id`, which the launcher adds for where the controller runs.
    `start` returns once it is launched; `Cluster` then waits for the connection files,
    calling `fetch_connection_files` between checks. `stop` leaves no process and no job.
    """

    kind: ClassVar[str]
    #: Seconds between checks for the connection files (an SSH check costs a round trip).
    poll_interval: ClassVar[float] = 0.005

    def __init__(
        self,
        *,
        profile_dir: Path,
        cluster_id: str,
        log_dir: Path,
        controller_args: list[str] | tuple = (),
        detach: bool = False,
        **options,
    ):
        self.profile_dir = Path(profile_dir)
        self.cluster_id = cluster_id
        self.log_dir = Path(log_dir)
        self.controller_args = list(controller_args)
        self.detach = bool(detach)
        self.options = options

    def controller_cli_args(self, profile_dir: str | Path | None = None) -> list[str]:
        """`controller --profile-dir ... --cluster-id ... <controller_args>`: what follows
        `corral` for this cluster's controller, whose profile is `profile_dir` where it runs."""
        return ["controller", "--profile-dir", str(profile_dir or self.profile_dir),
                "--cluster-id", self.cluster_id, *self.controller_args]

    def controller_command(self) -> list[str]:
        """`corral controller ...` run by this interpreter (a shared install)."""
        return corral_command(*self.controller_cli_args())

    def new_log_path(self) -> Path:
        tag = self.cluster_id or "default"
        return self.log_dir / f"corral-controller-{tag}-{os.getpid()}-{time.monotonic_ns()}.log"

    def base_record(self) -> dict:
        return {"kind": self.kind, "profile_dir": str(self.profile_dir), "cluster_id": self.cluster_id,
                "log_dir": str(self.log_dir), "controller_args": self.controller_args}

    @abc.abstractmethod
    def start(self) -> None:
        """Launch the controller; return without waiting for its files."""

    @abc.abstractmethod
    def stop(self, timeout: float = 5.0) -> None:
        """Stop the controller (SIGTERM, then SIGKILL or the scheduler's cancel)."""

    @abc.abstractmethod
    def signal(self, sig: int) -> None:
        """Send `sig` to the controller."""

    @abc.abstractmethod
    def running(self) -> bool:
        """Whether the controller (its process or job) still runs."""

    @abc.abstractmethod
    def to_dict(self) -> dict:
        """A JSON-able record from which `from_dict` can check and stop the controller."""

    @classmethod
    @abc.abstractmethod
    def from_dict(cls, record: dict) -> "ControllerLauncher":
        """The launcher `to_dict` described."""

    def fetch_connection_files(self) -> None:
        """Bring the connection files into the local profile, if the controller writes them
        elsewhere; called while `Cluster` waits for them. Default: a shared file system."""

    def log_tail(self, lines: int = 20) -> str:
        """The end of the controller's output, for error messages."""
        return ""

    def describe(self) -> str:
        """Where the controller runs, for messages."""
        return f"{self.kind} controller"


def find_controller_launcher(name_or_class: str | type) -> type[ControllerLauncher]:
    """The launcher class for a name ('ssh', 'slurm', ...), a "module:Class" path, or a class."""
    if isinstance(name_or_class, type):
        return name_or_class
    spec = CONTROLLER_LAUNCHERS.get(name_or_class.lower(), name_or_class)
    if ":" not in spec:
        raise ValueError(
            f"unknown controller launcher {name_or_class!r}: choose one of "
            f"{sorted(CONTROLLER_LAUNCHERS)} or pass 'module:Class'"
        )
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


class _ProcessController(ControllerLauncher):
    """A controller that is one local process (itself, or `mpiexec` around it), which the
    existing code and tests reach as `cluster.controller.pid` / `.process` / `.log_path`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        #: The process (a RecordedProcess after from_dict).
        self.proc: LocalProcess | RecordedProcess | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def process(self):
        """The `subprocess.Popen` (None for a controller another process started)."""
        return getattr(self.proc, "process", None)

    @property
    def log_path(self) -> Path | None:  # type: ignore[override]
        return self.proc.log_path if self.proc else None

    def running(self) -> bool:
        return bool(self.proc and self.proc.running())

    def signal(self, sig: int) -> None:
        if self.proc:
            self.proc.signal(sig)

    def wait(self, timeout: float) -> bool:
        return self.proc.wait(timeout) if self.proc else True

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc:
            self.proc.stop(timeout)

    def log_tail(self, lines: int = 20) -> str:
        path = self.log_path
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path else ""
        except OSError:
            return ""

    def exit_code(self) -> int | None:
        return getattr(self.process, "returncode", None)

    def to_dict(self) -> dict:
        # pid, log and create_time at the top level: the layout of cluster files before
        # controller launchers, which RecordedProcess reads.
        return {**self.base_record(), **(process_record(self.proc) if self.proc else {})}

    @classmethod
    def from_dict(cls, record: dict) -> "_ProcessController":
        self = cls(profile_dir=record.get("profile_dir", ""), cluster_id=record.get("cluster_id", ""),
                   log_dir=record.get("log_dir", ""), controller_args=record.get("controller_args", ()))
        if record.get("pid"):
            self.proc = RecordedProcess.from_dict(record)
        return self


class LocalControllerLauncher(_ProcessController):
    """The controller as a process on this machine (the default)."""

    kind = "local"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.options:
            raise TypeError(f"the local controller launcher takes no options, not {sorted(self.options)}")

    def start(self) -> None:
        self.proc = LocalProcess(self.controller_command(), self.new_log_path(), detach=self.detach).start()


class MPIControllerLauncher(_ProcessController):
    """The controller as the single rank of `mpiexec -n 1` (ipyparallel's
    MPIControllerLauncher), for sites where processes must start through MPI. Options:
    `mpi_cmd` (default `["mpiexec"]`), `mpi_args` (e.g. `["--host", "node1"]`). It writes
    its connection files into the profile on the shared file system."""

    kind = "mpi"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        unknown = sorted(set(self.options) - {"mpi_cmd", "mpi_args"})
        if unknown:
            raise TypeError(f"the MPI controller launcher got unknown option(s) {unknown}; "
                            "it takes mpi_cmd and mpi_args")
        self.mpi_cmd = list(self.options.get("mpi_cmd", ["mpiexec"]))
        self.mpi_args = list(self.options.get("mpi_args", []))

    def command(self) -> list[str]:
        from corral.cluster.mpi import find_mpiexec, is_open_mpi

        mpiexec = find_mpiexec(self.mpi_cmd[0])
        args = [mpiexec, *self.mpi_cmd[1:], "-n", "1"]
        if is_open_mpi(mpiexec) and os.geteuid() == 0:
            args.append("--allow-run-as-root")
        return [*args, *self.mpi_args, *self.controller_command()]

    def start(self) -> None:
        self.proc = LocalProcess(self.command(), self.new_log_path(), detach=self.detach).start()

    def _rank(self) -> RecordedProcess | None:
        """The controller process mpiexec started on this host."""
        import psutil

        if not self.running():
            return None
        try:
            for child in psutil.Process(self.pid).children(recursive=True):
                if "controller" in child.cmdline() and str(self.profile_dir) in child.cmdline():
                    return RecordedProcess(child.pid, None, child.create_time())
        except psutil.Error:
            pass
        return None

    def stop(self, timeout: float = 5.0) -> None:
        # SIGTERM the controller itself: it stops cleanly (removing its files) and
        # mpiexec, its one rank done, exits at once; SIGTERM to mpiexec takes Open MPI ~2 s.
        rank = self._rank()
        if rank is not None:
            rank.stop(timeout)
            self.wait(min(timeout, 5.0))
        super().stop(timeout)
        if rank is not None:
            rank.stop(timeout)

    def signal(self, sig: int) -> None:
        rank = self._rank()
        if rank is not None and sig not in (signal.SIGTERM, signal.SIGKILL):
            rank.signal(sig)
        else:
            super().signal(sig)
