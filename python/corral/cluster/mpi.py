"""Engines as the ranks of one MPI world: `Cluster(engines='mpi')`.

One `mpiexec -n N corral engine --mpi` starts every engine, so tasks can use mpi4py between
engines (rank, size, collectives). The controller stays outside the MPI job. Each engine
asks for its rank as engine id, as ipengine's `--mpi` does; the controller grants it when
that id is free (not after a restart, or next to other engines that took it), so each
namespace also has `mpi_rank` and `mpi_size`: `dv['mpi_rank']` maps ids to ranks always.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import time

from corral.cluster.launcher import EngineSetLauncher
from corral.cluster.local import LocalProcess, RecordedProcess, corral_command, process_record


@functools.lru_cache(maxsize=None)
def is_open_mpi(mpiexec: str) -> bool:
    """Whether `mpiexec` is Open MPI's (whose options --oversubscribe and
    --allow-run-as-root other MPIs do not know)."""
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    text = out.stdout + out.stderr
    return "Open MPI" in text or "OpenRTE" in text


def find_mpiexec(name: str = "mpiexec") -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(
            f"{name!r} is not on PATH: the MPI launcher needs an MPI installation "
            "(Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev; `make install` does it) "
            "and mpi4py (pip install mpi4py)"
        )
    return path


class MPIEngineSetLauncher(EngineSetLauncher):
    """Options (`engine_launcher_options`): `mpi_cmd` (default `["mpiexec"]`), `mpi_args`
    (extra mpiexec options, e.g. `["--hostfile", "hosts"]`), `oversubscribe` (Open MPI:
    more ranks than cores; default True), `detach` (the job outlives this process)."""

    kind = "mpi"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.mpi_cmd = list(self.options.get("mpi_cmd", ["mpiexec"]))
        self.mpi_args = list(self.options.get("mpi_args", []))
        self.oversubscribe = bool(self.options.get("oversubscribe", True))
        self.detach = bool(self.options.get("detach", False))
        #: The mpiexec process (a RecordedProcess after from_dict).
        self.mpiexec: LocalProcess | RecordedProcess | None = None
        #: The ranks on this host as last seen (recorded so that stop can check them).
        self.ranks: list[RecordedProcess] = []

    def command(self, n: int) -> list[str]:
        mpiexec = find_mpiexec(self.mpi_cmd[0])
        args = [mpiexec, *self.mpi_cmd[1:], "-n", str(n)]
        if is_open_mpi(mpiexec):
            if os.geteuid() == 0:
                args.append("--allow-run-as-root")
            if self.oversubscribe:
                args.append("--oversubscribe")
            # Variables that ranks on other hosts need too (Open MPI's -x exports them).
            for name in sorted(self.environment):
                args += ["-x", name]
        args += self.mpi_args
        if "IPP_CONNECTION_INFO" in self.environment:
            engine = corral_command("engine", "--log-level", self.log_level, *self.engine_args)
        else:
            engine = self.engine_command()
        return args + engine + ["--mpi"]

    def start(self, n: int) -> None:
        stamp = f"{os.getpid()}-{time.monotonic_ns()}"
        path = self.log_dir / f"corral-mpiexec-{self.cluster_id or 'default'}-{stamp}.log"
        env = dict(os.environ, **self.environment)
        self.mpiexec = LocalProcess(self.command(n), path, env=env, detach=self.detach).start()
        self.n = n

    def local_ranks(self) -> list[RecordedProcess]:
        """The engine processes mpiexec started on this host (its descendants)."""
        import psutil

        if self.mpiexec is None or not self.mpiexec.running():
            return [r for r in self.ranks if r.running()]
        try:
            children = psutil.Process(self.mpiexec.pid).children(recursive=True)
        except psutil.Error:
            return []
        ranks = []
        for child in children:
            try:
                if "engine" in child.cmdline() and "--mpi" in child.cmdline():
                    ranks.append(RecordedProcess(child.pid, None, child.create_time()))
            except psutil.Error:
                continue
        self.ranks = ranks
        return ranks

    def signal(self, sig: int) -> None:
        """To the ranks on this host directly: mpiexec ends the whole job on SIGINT, where
        an engine only interrupts its task. Without local ranks, to mpiexec."""
        ranks = self.local_ranks()
        if ranks and sig not in (signal.SIGTERM, signal.SIGKILL):
            for rank in ranks:
                rank.signal(sig)
        elif self.mpiexec is not None:
            self.mpiexec.signal(sig)

    def stop(self, timeout: float = 5.0) -> None:
        ranks = self.local_ranks()
        if ranks and len(ranks) == self.n:
            # Every rank runs here: SIGTERM them all at once. Each engine unregisters and
            # finalizes MPI, and mpiexec, its job done, exits cleanly within a fraction of a
            # second, where SIGTERM to mpiexec makes Open MPI take ~2 s to tear the job
            # down. (With ranks elsewhere, the local ones would wait in MPI_Finalize for
            # the others, so mpiexec is asked instead.)
            for rank in ranks:
                rank.signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for rank in ranks:
                rank.wait(max(0.0, deadline - time.monotonic()))
            if self.mpiexec is not None:
                self.mpiexec.wait(min(1.0, timeout))
        if self.mpiexec is not None:
            self.mpiexec.stop(timeout)
        # mpiexec kills its ranks as it goes; make sure none is left on this host.
        for rank in ranks:
            rank.stop(timeout)

    def failure(self) -> str | None:
        job = self.mpiexec
        if not isinstance(job, LocalProcess) or job.running():
            return None
        return (f"mpiexec exited with code {job.process.returncode}; its log {job.log_path} "
                f"ends with:\n{job.log_tail()}")

    def running(self) -> bool:
        return bool(self.mpiexec is not None and self.mpiexec.running()) or any(
            r.running() for r in self.ranks
        )

    def to_dict(self) -> dict:
        return {
            **self.base_record(),
            "mpiexec": process_record(self.mpiexec) if self.mpiexec else None,
            "ranks": [process_record(r) for r in self.local_ranks()],
        }

    @classmethod
    def from_dict(cls, record: dict) -> "MPIEngineSetLauncher":
        self = cls(
            engine_file=record["engine_file"], profile_dir=record["profile_dir"],
            cluster_id=record.get("cluster_id", ""), log_dir=record["log_dir"],
            log_level=record.get("log_level", "warning"),
        )
        if record.get("mpiexec"):
            self.mpiexec = RecordedProcess.from_dict(record["mpiexec"])
        self.ranks = [RecordedProcess.from_dict(r) for r in record.get("ranks", [])]
        self.n = record.get("n", 0)
        return self
