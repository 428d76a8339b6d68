"""`corral.Cluster`: start a controller and engines as local processes, connect a client.

The API is ipyparallel's (`start_cluster_sync`, `connect_client_sync`,
`start_and_connect_sync`, `stop_cluster_sync`, `with Cluster(n=4) as rc:`), so code and the
benchmark runner drive either implementation the same way.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import string
import time
import weakref
from pathlib import Path

from corral import connection as profiles
from corral.cluster.local import LocalProcess, corral_command, stop_pids


def _level_name(level: str | int) -> str:
    """`logging.ERROR` or "ERROR" -> "error" (ipyparallel takes numbers, our CLIs names)."""
    import logging

    return (logging.getLevelName(level) if isinstance(level, int) else level).lower()


def _new_cluster_id() -> str:
    """ipyparallel's form: `<unix time>-<4 random chars>`."""
    suffix = "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(4))
    return f"{int(time.time())}-{suffix}"


class Cluster:
    """A local corral cluster: one controller process and `n` engine processes."""

    def __init__(
        self,
        n: int | None = None,
        *,
        profile: str | None = None,
        profile_dir: str | os.PathLike | None = None,
        cluster_id: str | None = None,
        controller_ip: str = "127.0.0.1",
        log_level: str | int = "warning",
        engine_timeout: float = 60.0,
        controller_timeout: float = 30.0,
        detach: bool = False,
        shutdown_atexit: bool = True,
        controller_args: list[str] | tuple = (),
        engine_args: list[str] | tuple = (),
        enable_curve: bool = False,
    ):
        self.n = n
        self.profile_dir = profiles.resolve_profile_dir(profile, profile_dir)
        self.cluster_id = _new_cluster_id() if cluster_id is None else cluster_id
        self.controller_ip = controller_ip
        self.log_level = _level_name(log_level)
        self.engine_timeout = engine_timeout
        self.controller_timeout = controller_timeout
        self.detach = detach
        #: Extra command-line options, e.g. `controller_args=["--hb-period", "500"]`.
        self.controller_args = list(controller_args)
        self.engine_args = list(engine_args)
        #: CurveZMQ encryption of every connection (ipyparallel's `enable_curve`): the
        #: controller runs with `--enable-curve` and writes its public key into the
        #: connection files, from which engines and clients take it.
        self.enable_curve = enable_curve
        self.controller: LocalProcess | None = None
        self.engines: list[LocalProcess] = []
        self._clients: list = []
        if shutdown_atexit and not detach:
            atexit.register(_stop_at_exit, weakref.ref(self))

    def __repr__(self) -> str:
        state = "running" if self.controller and self.controller.running() else "stopped"
        return f"<Cluster(cluster_id={self.cluster_id!r}, profile_dir={str(self.profile_dir)!r}, {state}, engines={len(self.engines)})>"

    # -- files -----------------------------------------------------------------------
    @property
    def client_file(self) -> Path:
        return profiles.connection_file(self.profile_dir, "client", self.cluster_id)

    @property
    def engine_file(self) -> Path:
        return profiles.connection_file(self.profile_dir, "engine", self.cluster_id)

    @property
    def cluster_file(self) -> Path:
        return profiles.cluster_file(self.profile_dir, self.cluster_id)

    def _log_path(self, role: str) -> Path:
        tag = self.cluster_id or "default"
        return profiles.log_dir(self.profile_dir) / f"corral-{role}-{tag}-{os.getpid()}-{time.monotonic_ns()}.log"

    # -- start -----------------------------------------------------------------------
    def start_controller_sync(self) -> None:
        if self.controller and self.controller.running():
            raise RuntimeError(f"the controller of {self} is already running")
        for stale in (self.client_file, self.engine_file):
            stale.unlink(missing_ok=True)
        args = corral_command(
            "controller",
            "--profile-dir", str(self.profile_dir),
            "--cluster-id", self.cluster_id,
            "--ip", self.controller_ip,
            "--log-level", self.log_level,
            *(["--enable-curve"] if self.enable_curve else []),
            *self.controller_args,
        )
        self.controller = LocalProcess(args, self._log_path("controller"), detach=self.detach).start()
        deadline = time.monotonic() + self.controller_timeout
        while not (self.client_file.exists() and self.engine_file.exists()):
            if not self.controller.running():
                raise RuntimeError(
                    f"the controller exited with code {self.controller.process.returncode} before "
                    f"writing {self.client_file}; its log ({self.controller.log_path}) ends with:\n"
                    + self.controller.log_tail()
                )
            if time.monotonic() > deadline:
                self.controller.stop()
                raise TimeoutError(
                    f"the controller did not write {self.client_file} within "
                    f"{self.controller_timeout:.0f} s; see its log {self.controller.log_path}"
                )
            time.sleep(0.005)

    def start_engines_sync(self, n: int | None = None) -> list[LocalProcess]:
        n = self.n if n is None else n
        if not n:
            raise ValueError("how many engines? pass n to Cluster(n=...) or start_engines_sync(n)")
        started = []
        for _ in range(n):
            args = corral_command(
                "engine", "--file", str(self.engine_file), "--log-level", self.log_level,
                *self.engine_args,
            )
            started.append(LocalProcess(args, self._log_path("engine"), detach=self.detach).start())
        self.engines.extend(started)
        return started

    def start_cluster_sync(self, n: int | None = None) -> None:
        self.start_controller_sync()
        self.start_engines_sync(n)
        if self.detach:
            self.write_cluster_file()

    def connect_client_sync(self, **kwargs):
        from corral.client import Client

        client = Client(url_file=str(self.client_file), **kwargs)
        self._clients.append(client)
        return client

    def wait_for_engines_sync(self, client, n: int | None = None) -> None:
        n = len(self.engines) if n is None else n
        try:
            client.wait_for_engines(n, timeout=self.engine_timeout)
        except TimeoutError as e:
            dead = [e for e in self.engines if not e.running()]
            hint = ""
            if dead:
                hint = f"; {len(dead)} engine(s) exited, e.g. {dead[0].log_path}:\n{dead[0].log_tail()}"
            raise TimeoutError(f"{e}{hint}") from None

    def start_and_connect_sync(self, n: int | None = None, activate: bool = False):
        """Start the controller and engines, connect a client, wait for every engine;
        ``activate``: the ``%px`` magics run on all of them (``client.activate()``)."""
        self.start_cluster_sync(n)
        client = self.connect_client_sync()
        self.wait_for_engines_sync(client)
        if activate:
            client.activate()
        return client

    # -- stop ------------------------------------------------------------------------
    def stop_engines_sync(self) -> None:
        stop_all(self.engines)
        self.engines = []

    def stop_controller_sync(self) -> None:
        if self.controller:
            self.controller.stop()
            self.controller = None
        for leftover in (self.client_file, self.engine_file):
            leftover.unlink(missing_ok=True)

    def stop_cluster_sync(self) -> None:
        for client in self._clients:
            try:
                client.close()
            except Exception:  # a client of a dying cluster may already be closed
                pass
        self._clients = []
        self.stop_engines_sync()
        self.stop_controller_sync()
        self.cluster_file.unlink(missing_ok=True)

    # -- the file `corral cluster stop` reads ----------------------------------------------
    def write_cluster_file(self) -> Path:
        record = {
            "cluster_id": self.cluster_id,
            "profile_dir": str(self.profile_dir),
            "controller": {"pid": self.controller.pid, "log": str(self.controller.log_path)},
            "engines": [{"pid": e.pid, "log": str(e.log_path)} for e in self.engines],
        }
        self.cluster_file.parent.mkdir(parents=True, exist_ok=True)
        self.cluster_file.write_text(json.dumps(record, indent=2))
        return self.cluster_file

    @staticmethod
    def stop_from_file(path: Path, timeout: float = 5.0) -> dict:
        """Stop the processes a detached cluster recorded, engines first."""
        record = json.loads(Path(path).read_text())
        stop_pids([e["pid"] for e in record.get("engines", [])], timeout)
        stop_pids([record["controller"]["pid"]], timeout)
        Path(path).unlink(missing_ok=True)
        return record

    # -- context manager: `with Cluster(n=4) as rc:` ------------------------------------
    def __enter__(self):
        return self.start_and_connect_sync()

    def __exit__(self, *exc) -> None:
        self.stop_cluster_sync()


def stop_all(processes: list[LocalProcess], timeout: float = 5.0) -> None:
    """SIGTERM every process at once, then wait (and SIGKILL stragglers)."""
    import signal

    for p in processes:
        p.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in processes:
        if not p.wait(max(0.0, deadline - time.monotonic())):
            p.signal(signal.SIGKILL)
            p.wait(timeout)


def _stop_at_exit(ref) -> None:
    cluster = ref()
    if cluster is not None and (cluster.controller or cluster.engines):
        cluster.stop_cluster_sync()
