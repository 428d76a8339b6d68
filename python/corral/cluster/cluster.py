"""`corral.Cluster`: a controller and sets of engines, started by launchers, and a client.

The API is ipyparallel's (8+): `await cluster.start_cluster()`, `start_engines(n)` returning
an engine-set id, `stop_engines`/`signal_engines`/`restart_engines` per set, `async with
Cluster(...) as rc`, each with a `_sync` twin (`start_and_connect_sync`, `with Cluster(n=4)
as rc:`), `to_dict`/`from_file`. Where engines run is a launcher chosen by name:
`Cluster(engines='local'|'mpi'|'ssh'|'slurm'|...)`, configured by
`engine_launcher_options={...}` (see `corral.cluster.launcher`).

Every started cluster is recorded in `<profile_dir>/security/cluster-<cluster_id>.json`
(pids with start times, launcher state), which `Cluster.from_file`, `ClusterManager`
and `corral cluster stop|list|clean` read back.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import random
import string
import time
import weakref
from pathlib import Path

from corral import connection as profiles
from corral.cluster.controller_launcher import (
    CONTROLLER_LAUNCHERS,
    ControllerLauncher,
    find_controller_launcher,
)
from corral.cluster.launcher import ENGINE_LAUNCHERS, EngineSetLauncher, EngineSetExited, find_engine_launcher


def _level_name(level: str | int) -> str:
    """`logging.ERROR` or "ERROR" -> "error" (ipyparallel takes numbers, our CLIs names)."""
    import logging

    return (logging.getLevelName(level) if isinstance(level, int) else level).lower()


def _new_cluster_id() -> str:
    """ipyparallel's form: `<unix time>-<4 random chars>`."""
    suffix = "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(4))
    return f"{int(time.time())}-{suffix}"


def _launcher_name(launcher: str | type, names: dict[str, str] = ENGINE_LAUNCHERS) -> str:
    """How a launcher is written in a cluster file: its short name, else "module:Class"."""
    if isinstance(launcher, str):
        return launcher.lower() if launcher.lower() in names else launcher
    kind = getattr(launcher, "kind", None)
    if kind and names.get(kind, "").endswith(f":{launcher.__name__}"):
        return kind
    return f"{launcher.__module__}:{launcher.__name__}"


def _load_controller_launcher(name_or_class: str | type) -> type[ControllerLauncher]:
    try:
        return find_controller_launcher(name_or_class)
    except ImportError as e:
        raise ValueError(f"controller launcher {name_or_class!r} could not be loaded: {e}") from e


def _load_launcher(name_or_class: str | type) -> type[EngineSetLauncher]:
    """`find_engine_launcher`, with an ImportError (a launcher's module or its optional
    dependency missing) told as such."""
    try:
        return find_engine_launcher(name_or_class)
    except ImportError as e:
        raise ValueError(f"engine launcher {name_or_class!r} could not be loaded: {e}") from e


class Cluster:
    """A corral cluster: one local controller and engine sets started by a launcher.

    `n=None` starts one engine per CPU core (`os.cpu_count()`), as ipyparallel does.
    `engines` (or ipyparallel's `engine_launcher_class`) names the launcher; its options go
    in `engine_launcher_options`. `controller` (or `controller_launcher_class`) names where
    the controller runs: 'local' (here, the default), 'mpi', 'ssh', 'slurm', 'pbs', 'sge',
    'lsf' (see `corral.cluster.controller_launcher`), with `controller_launcher_options`.
    `send_engines_connection_env` (default True, as in ipyparallel) hands engines their
    connection info in `$IPP_CONNECTION_INFO` rather than a file path.
    """

    def __init__(
        self,
        n: int | None = None,
        *,
        engines: str | type = "local",
        controller: str | type = "local",
        engine_launcher_class: str | type | None = None,
        engine_launcher_options: dict | None = None,
        controller_launcher_class: str | type | None = None,
        controller_launcher_options: dict | None = None,
        profile: str | None = None,
        profile_dir: str | os.PathLike | None = None,
        cluster_id: str | None = None,
        controller_ip: str = "127.0.0.1",
        controller_location: str | None = None,
        log_level: str | int = "warning",
        engine_timeout: float = 60.0,
        controller_timeout: float = 30.0,
        detach: bool = False,
        shutdown_atexit: bool = True,
        controller_args: list[str] | tuple = (),
        engine_args: list[str] | tuple = (),
        enable_curve: bool = False,
        send_engines_connection_env: bool = True,
        dashboard_port: int | None = None,
    ):
        self.n = n
        self.controller_launcher = controller_launcher_class or controller
        _load_controller_launcher(self.controller_launcher)  # an unknown name fails here
        self.controller_launcher_options = dict(controller_launcher_options or {})
        self.engine_launcher = engine_launcher_class or engines
        _load_launcher(self.engine_launcher)  # an unknown name fails here, not later
        self.engine_launcher_options = dict(engine_launcher_options or {})
        self.profile_dir = profiles.resolve_profile_dir(profile, profile_dir)
        self.cluster_id = _new_cluster_id() if cluster_id is None else cluster_id
        self.controller_ip = controller_ip
        #: The host name or IP written into the connection files (`--location`), for
        #: engines on other machines; default: this machine's host name.
        self.controller_location = controller_location
        self.log_level = _level_name(log_level)
        self.engine_timeout = engine_timeout
        self.controller_timeout = controller_timeout
        self.detach = detach
        self.shutdown_atexit = shutdown_atexit
        #: Extra command-line options, e.g. `controller_args=["--hb-period", "500"]`.
        self.controller_args = list(controller_args)
        self.engine_args = list(engine_args)
        #: CurveZMQ encryption of every connection (ipyparallel's `enable_curve`): the
        #: controller runs with `--enable-curve` and writes its public key into the
        #: connection files, from which engines and clients take it.
        self.enable_curve = enable_curve
        self.send_engines_connection_env = send_engines_connection_env
        #: The controller's web dashboard (`--dashboard-port`; 0 picks a free port), off
        #: when None; its URL with the token is `dashboard_url` once the controller runs.
        self.dashboard_port = dashboard_port
        #: The controller's launcher once started (or read from a cluster file); for a
        #: local controller it also has `pid`, `process` and `log_path`.
        self.controller: ControllerLauncher | None = None
        #: Engine sets by id, as `start_engines` returned them.
        self.engines: dict[str, EngineSetLauncher] = {}
        self._clients: list = []
        if shutdown_atexit and not detach:
            atexit.register(_stop_at_exit, weakref.ref(self))

    def __del__(self):
        # ipyparallel's rule: a cluster that would stop at exit also stops when dropped,
        # so `Cluster(n=4).start_cluster_sync()` with no name kept leaves nothing behind.
        # (A client from `connect_client` holds its cluster, so `rc = Cluster(n=4)
        # .start_and_connect_sync()` keeps it running until `rc` goes, or exit.)
        if getattr(self, "shutdown_atexit", False) and not getattr(self, "detach", True):
            if getattr(self, "controller", None) or getattr(self, "engines", None):
                try:
                    self.stop_cluster_sync()
                except Exception:  # noqa: BLE001 - nothing to tell at collection time
                    pass

    def __repr__(self) -> str:
        state = "running" if self.controller and self.controller.running() else "stopped"
        return (f"<Cluster(cluster_id={self.cluster_id!r}, profile_dir={str(self.profile_dir)!r}, "
                f"engines={_launcher_name(self.engine_launcher)!r}, controller=<{state}>, "
                f"engine_sets={list(self.engines)})>")

    # -- files -----------------------------------------------------------------------
    @property
    def client_file(self) -> Path:
        return profiles.connection_file(self.profile_dir, "client", self.cluster_id)

    @property
    def dashboard_url(self) -> str | None:
        """The running controller's dashboard URL, token included (None when it is off)."""
        try:
            info = json.loads(self.client_file.read_text())
        except FileNotFoundError:
            return None
        return info.get("corral_dashboard_url")

    @property
    def engine_file(self) -> Path:
        return profiles.connection_file(self.profile_dir, "engine", self.cluster_id)

    @property
    def cluster_file(self) -> Path:
        return profiles.cluster_file(self.profile_dir, self.cluster_id)

    @property
    def log_dir(self) -> Path:
        return profiles.log_dir(self.profile_dir)

    def _log_path(self, role: str) -> Path:
        tag = self.cluster_id or "default"
        return self.log_dir / f"corral-{role}-{tag}-{os.getpid()}-{time.monotonic_ns()}.log"

    # -- controller ------------------------------------------------------------------
    def new_controller(self) -> ControllerLauncher:
        """The configured controller launcher, ready to `start()`."""
        args = [
            "--ip", self.controller_ip,
            "--log-level", self.log_level,
            *(["--enable-curve"] if self.enable_curve else []),
            *(["--location", self.controller_location] if self.controller_location else []),
            *([] if self.dashboard_port is None else ["--dashboard-port", str(self.dashboard_port)]),
            *self.controller_args,
        ]
        cls = _load_controller_launcher(self.controller_launcher)
        return cls(profile_dir=self.profile_dir, cluster_id=self.cluster_id, log_dir=self.log_dir,
                   controller_args=args, detach=self.detach, **self.controller_launcher_options)

    def start_controller_sync(self) -> None:
        if self.controller and self.controller.running():
            raise RuntimeError(f"the controller of {self} is already running")
        # With --reuse the old files stay until the controller rewrites them (same key
        # and ports): wait for new modification times instead of for the files.
        old_files = {p: p.stat().st_mtime_ns for p in (self.client_file, self.engine_file) if p.exists()}
        if not self.reuse_files:
            for stale in old_files:
                stale.unlink()
            old_files = {}
        controller = self.new_controller()
        controller.start()
        self.controller = controller
        self.update_cluster_file()  # recorded at once, so `cluster stop` finds a slow one
        deadline = time.monotonic() + self.controller_timeout

        def written(path: Path) -> bool:
            try:
                return path.stat().st_mtime_ns != old_files.get(path)
            except FileNotFoundError:
                return False

        while not (written(self.client_file) and written(self.engine_file)):
            if not controller.running():
                code = getattr(controller, "exit_code", lambda: None)()
                self.controller = None
                controller.stop()
                self.update_cluster_file()
                raise RuntimeError(
                    f"the {controller.describe()} exited"
                    + (f" with code {code}" if code is not None else "")
                    + f" before writing {self.client_file}; its output ends with:\n"
                    + controller.log_tail()
                )
            if time.monotonic() > deadline:
                self.controller = None
                controller.stop()
                self.update_cluster_file()
                raise TimeoutError(
                    f"the {controller.describe()} did not write {self.client_file} within "
                    f"{self.controller_timeout:.0f} s; its output ends with:\n{controller.log_tail()}"
                )
            controller.fetch_connection_files()
            time.sleep(controller.poll_interval)
        self.update_cluster_file()

    @property
    def reuse_files(self) -> bool:
        """`controller_args=["--reuse"]`: the controller starts on the key and ports of the
        existing connection files and leaves them when it stops."""
        return "--reuse" in self.controller_args or "--restore" in self.controller_args

    def stop_controller_sync(self) -> None:
        if self.controller:
            self.controller.stop()
            self.controller = None
        if not self.reuse_files:
            for leftover in (self.client_file, self.engine_file):
                leftover.unlink(missing_ok=True)
        self.update_cluster_file()

    # -- engine sets -----------------------------------------------------------------
    def _new_engine_set_id(self) -> str:
        base = set_id = str(int(time.time()))
        i = 1
        while set_id in self.engines:
            set_id = f"{base}-{i}"
            i += 1
        return set_id

    def new_engine_set(self) -> EngineSetLauncher:
        """The configured launcher, ready to `start(n)` engines of this cluster."""
        cls = _load_launcher(self.engine_launcher)
        options = dict(self.engine_launcher_options)
        options.setdefault("detach", self.detach)
        launcher = cls(
            engine_file=self.engine_file, profile_dir=self.profile_dir,
            cluster_id=self.cluster_id, log_dir=self.log_dir, log_level=self.log_level,
            engine_args=self.engine_args, **options,
        )
        if self.send_engines_connection_env and self.engine_file.exists():
            launcher.environment["IPP_CONNECTION_INFO"] = self.engine_file.read_text()
        return launcher

    def start_engines_sync(self, n: int | None = None, engine_set_id: str | None = None) -> str:
        """Launch `n` engines as one engine set; return its id for `stop_engines`,
        `signal_engines`, `restart_engines`. Default: the cluster's `n`, else the launcher's
        own `engine_count` if it has one (e.g. the hosts of an SSH launcher), else one
        engine per CPU core."""
        if not self.engine_file.exists():
            raise RuntimeError(
                f"no controller for {self}: {self.engine_file} does not exist; "
                "start_controller() first (or start_cluster())"
            )
        launcher = self.new_engine_set()
        if n is None:
            n = self.n
        if n is None:
            n = getattr(launcher, "engine_count", None) or os.cpu_count() or 1
        if n < 1:
            raise ValueError(f"cannot start {n} engines: pass n >= 1")
        set_id = self._new_engine_set_id() if engine_set_id is None else engine_set_id
        launcher.start(n)
        self.engines[set_id] = launcher
        self.update_cluster_file()
        return set_id

    def _engine_sets(self, engine_set_id: str | None) -> list[str]:
        if engine_set_id is None:
            return list(self.engines)
        if engine_set_id not in self.engines:
            raise KeyError(f"no engine set {engine_set_id!r}; this cluster has {list(self.engines)}")
        return [engine_set_id]

    def stop_engines_sync(self, engine_set_id: str | None = None) -> None:
        """Stop one engine set, or every set when no id is given."""
        for set_id in self._engine_sets(engine_set_id):
            self.engines[set_id].stop()
            del self.engines[set_id]
        self.update_cluster_file()

    def signal_engines_sync(self, sig: int, engine_set_id: str | None = None) -> None:
        """Send `sig` (e.g. `signal.SIGINT`: interrupt the running task) to one set's
        engines, or to every set's."""
        for set_id in self._engine_sets(engine_set_id):
            self.engines[set_id].signal(sig)

    def restart_engines_sync(self, engine_set_id: str | None = None) -> None:
        """Stop a set (or every set) and start as many engines again under the same id;
        they register under new engine ids."""
        for set_id in self._engine_sets(engine_set_id):
            n = self.engines[set_id].n
            self.stop_engines_sync(set_id)
            self.start_engines_sync(n, set_id)

    def engine_pids(self) -> list[int]:
        """Pids of the engine processes on this machine that this cluster started."""
        pids = []
        for launcher in self.engines.values():
            pids += [p for p in getattr(launcher, "pids", []) if p]
        return pids

    # -- cluster ---------------------------------------------------------------------
    def start_cluster_sync(self, n: int | None = None) -> "Cluster":
        if self.controller is None or not self.controller.running():
            self.start_controller_sync()
        self.start_engines_sync(n)
        return self

    def stop_cluster_sync(self) -> None:
        for client in self._clients:
            try:
                client.close()
            except Exception:  # a client of a dying cluster may already be closed
                pass
        self._clients = []
        self.stop_engines_sync()
        self.stop_controller_sync()

    def connect_client_sync(self, **kwargs):
        from corral.client import Client

        client = Client(url_file=str(self.client_file), cluster=self, **kwargs)
        self._clients.append(client)
        return client

    #: Seconds between checks, while waiting for engines, that their launchers still run them.
    engine_check_interval = 1.0

    def wait_for_engines_sync(self, client, n: int | None = None) -> None:
        """Wait until `n` engines (default: all started) are registered. Fails at once, not
        at `engine_timeout`, when a launcher sees its engines exit (`EngineSetExited`, with
        the end of their log) or the controller has stopped."""
        n = sum(s.n for s in self.engines.values()) if n is None else n
        deadline = time.monotonic() + self.engine_timeout
        while True:
            left = deadline - time.monotonic()
            try:
                client.wait_for_engines(n, timeout=max(0.0, min(self.engine_check_interval, left)))
                break
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{len(client.ids)} engine(s) registered after "
                                       f"{self.engine_timeout:g} s, waited for {n}"
                                       f"{self._engine_failure_hint()}") from None
            except ConnectionError as lost:  # ControllerLost: say what its launcher saw
                try:
                    self._check_still_running(n)
                except RuntimeError as stopped:
                    raise stopped from lost
                raise
            self._check_still_running(n)
        self.update_cluster_file()  # now with every engine's pid (mpiexec's ranks)

    def _check_still_running(self, n: int) -> None:
        if self.controller is not None and not self.controller.running():
            raise RuntimeError(f"the {self.controller.describe()} has stopped while waiting for "
                               f"{n} engine(s); its output ends with:\n{self.controller.log_tail()}")
        for set_id, launcher in self.engines.items():
            failure = launcher.failure()
            if failure:
                raise EngineSetExited(f"engine set {set_id} ({launcher.kind}): {failure}")

    def _engine_failure_hint(self) -> str:
        for launcher in self.engines.values():
            failure = launcher.failure()
            if failure:
                return f"; {failure}"
        return f"; engine logs are in {self.log_dir}"

    def start_and_connect_sync(self, n: int | None = None, activate: bool = False):
        """Start the controller and engines, connect a client, wait for every engine;
        ``activate``: the ``%px`` magics run on all of them (``client.activate()``)."""
        self.start_cluster_sync(n)
        client = self.connect_client_sync()
        self.wait_for_engines_sync(client)
        if activate:
            client.activate()
        return client

    # -- the async API of ipyparallel 8+ --------------------------------------------------
    # Each runs its `_sync` twin in a worker thread, so awaiting it never blocks the loop.
    async def start_controller(self) -> None:
        await asyncio.to_thread(self.start_controller_sync)

    async def start_engines(self, n: int | None = None, engine_set_id: str | None = None) -> str:
        return await asyncio.to_thread(self.start_engines_sync, n, engine_set_id)

    async def start_cluster(self, n: int | None = None) -> "Cluster":
        return await asyncio.to_thread(self.start_cluster_sync, n)

    async def connect_client(self, **kwargs):
        return await asyncio.to_thread(lambda: self.connect_client_sync(**kwargs))

    async def wait_for_engines(self, client, n: int | None = None) -> None:
        await asyncio.to_thread(self.wait_for_engines_sync, client, n)

    async def start_and_connect(self, n: int | None = None, activate: bool = False):
        await self.start_cluster(n)
        client = await self.connect_client()
        await self.wait_for_engines(client)
        if activate:
            client.activate()
        return client

    async def stop_engines(self, engine_set_id: str | None = None) -> None:
        await asyncio.to_thread(self.stop_engines_sync, engine_set_id)

    async def signal_engines(self, sig: int, engine_set_id: str | None = None) -> None:
        await asyncio.to_thread(self.signal_engines_sync, sig, engine_set_id)

    async def restart_engines(self, engine_set_id: str | None = None) -> None:
        await asyncio.to_thread(self.restart_engines_sync, engine_set_id)

    async def stop_controller(self) -> None:
        await asyncio.to_thread(self.stop_controller_sync)

    async def stop_cluster(self) -> None:
        await asyncio.to_thread(self.stop_cluster_sync)

    # -- the cluster file ----------------------------------------------------------------
    def is_running(self) -> bool:
        """Whether the controller or any engine set still runs."""
        return bool(self.controller and self.controller.running()) or any(
            s.running() for s in self.engines.values()
        )

    def to_dict(self) -> dict:
        """What `from_dict` needs to find, signal and stop this cluster from another
        process (ipyparallel's layout: `cluster`, `controller`, `engines.sets`)."""
        d: dict = {
            "cluster": {
                "controller_launcher_options": self.controller_launcher_options,
                "class": f"{type(self).__module__}:{type(self).__name__}",
                "cluster_id": self.cluster_id,
                "profile_dir": str(self.profile_dir),
                "n": self.n,
                "controller_ip": self.controller_ip,
                "controller_location": self.controller_location,
                "controller_args": self.controller_args,
                "log_level": self.log_level,
                "enable_curve": self.enable_curve,
                "engine_timeout": self.engine_timeout,
                "dashboard_port": self.dashboard_port,
            },
            "engines": {
                "class": _launcher_name(self.engine_launcher),
                "sets": {set_id: s.to_dict() for set_id, s in self.engines.items()},
            },
        }
        if self.controller is not None:
            d["controller"] = {
                "class": _launcher_name(type(self.controller), CONTROLLER_LAUNCHERS),
                "state": self.controller.to_dict(),
            }
        return d

    @classmethod
    def from_dict(cls, d: dict, **kwargs) -> "Cluster":
        """A Cluster for a recorded one, able to stop, signal and restart it."""
        info = d.get("cluster", {})
        kwargs.setdefault("shutdown_atexit", False)
        for key in ("cluster_id", "profile_dir", "n", "controller_ip", "controller_location",
                    "controller_args", "log_level", "enable_curve", "engine_timeout",
                    "dashboard_port", "controller_launcher_options"):
            if key in info:
                kwargs.setdefault(key, info[key])
        engines = d.get("engines") or {}
        if isinstance(engines, list):  # the layout before engine sets: local pids
            engines = {"class": "local", "sets": {"0": _old_local_set(d, engines)}}
        launcher_name = engines.get("class", "local")
        self = cls(engines=launcher_name, **kwargs)
        controller = d.get("controller")
        if controller:
            state = controller.get("state", controller)
            launcher_cls = _load_controller_launcher(controller.get("class") or "local")
            self.controller = launcher_cls.from_dict(state)
            self.controller_launcher = controller.get("class") or "local"
        for set_id, record in engines.get("sets", {}).items():
            launcher_cls = _load_launcher(record.get("kind") or launcher_name)
            self.engines[set_id] = launcher_cls.from_dict(record)
        return self

    @classmethod
    def from_file(
        cls,
        cluster_file: str | os.PathLike | None = None,
        *,
        profile: str | None = None,
        profile_dir: str | os.PathLike | None = None,
        cluster_id: str = "",
        **kwargs,
    ) -> "Cluster":
        """The cluster recorded in `cluster_file`, or in the profile's file for
        `cluster_id` (default: the one `corral cluster start` makes)."""
        if cluster_file is None:
            cluster_file = profiles.cluster_file(profiles.resolve_profile_dir(profile, profile_dir), cluster_id)
        path = Path(cluster_file)
        if not path.exists():
            raise FileNotFoundError(f"no cluster file {path}: is a cluster running there? (`corral cluster list`)")
        return cls.from_dict(json.loads(path.read_text()), **kwargs)

    def write_cluster_file(self) -> Path:
        self.cluster_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cluster_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
        os.replace(tmp, self.cluster_file)
        return self.cluster_file

    def update_cluster_file(self) -> None:
        """Record the cluster while anything runs; remove the record once all stopped."""
        if self.controller is not None or self.engines:
            self.write_cluster_file()
        else:
            self.cluster_file.unlink(missing_ok=True)

    # -- context managers: `with Cluster(n=4) as rc:`, `async with Cluster() as rc:` -------
    def __enter__(self):
        return self.start_and_connect_sync()

    def __exit__(self, *exc) -> None:
        self.stop_cluster_sync()

    async def __aenter__(self):
        return await self.start_and_connect()

    async def __aexit__(self, *exc) -> None:
        await self.stop_cluster()


def _old_local_set(d: dict, engines: list[dict]) -> dict:
    return {
        "kind": "local", "n": len(engines), "cluster_id": d.get("cluster_id", ""),
        "profile_dir": d.get("profile_dir", ""), "engine_file": "", "log_dir": "",
        "processes": engines,
    }


def _stop_at_exit(ref) -> None:
    cluster = ref()
    if cluster is not None and (cluster.controller or cluster.engines):
        cluster.stop_cluster_sync()
