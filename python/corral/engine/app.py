"""`corral engine`: find the engine connection file, register, serve requests.

Options and file locations follow `ipengine`: `<profile_dir>/security/
ipcontroller[-<cluster_id>]-engine.json`, waiting up to 10 s for it to appear.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

#: How long to wait for the connection file to appear (ipengine's `wait_for_url_file`).
WAIT_FOR_FILE = 10.0

log = logging.getLogger("corral.engine")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="corral engine", description="Run one engine that connects to a controller."
    )
    p.add_argument("--profile", default="default", help="IPython profile name")
    p.add_argument(
        "--profile-dir",
        default=os.environ.get("IPP_PROFILE_DIR") or None,
        help="profile directory (overrides --profile; default $IPP_PROFILE_DIR)",
    )
    p.add_argument(
        "--cluster-id",
        default=os.environ.get("IPP_CLUSTER_ID", ""),
        help="cluster id in the file name (default $IPP_CLUSTER_ID)",
    )
    p.add_argument(
        "--file",
        help="engine connection file (ipcontroller-engine.json); without it, the connection"
        " info in $IPP_CONNECTION_INFO if set (as ipyparallel's launchers pass it), else the"
        " profile's file",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds to wait for a controller to accept the connection (once one has, the"
        " engine waits up to 120 s for its registration reply)",
    )
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING, ERROR")
    p.epilog = ("Options --Class.trait=value configure the engine's IPython shell, as for "
                "ipengine (e.g. --InteractiveShell.colors=nocolor).")
    p.add_argument(
        "--controller-grace", type=float, default=3.0, metavar="SECONDS",
        help="how long the connection to the controller's heartbeat may stay closed before "
        "the engine decides the controller is gone and exits (a controller restarted on the "
        "same ports within it is kept); a controller run with --reuse or --restore asks "
        "for longer at registration (its --restart-grace, 60 s by default) and the longer "
        "wait applies; 50 missed heartbeats remain the bound otherwise",
    )
    p.add_argument(
        "--mpi", action="store_true",
        help="run as one rank of an MPI world (ipengine's --mpi): MPI is initialized by "
        "mpi4py before registering, the engine asks for its rank as engine id, and the "
        "namespace gets MPI, mpi_rank and mpi_size",
    )
    p.add_argument(
        "--insecure", action="store_true",
        help="accept a connection file with an empty key (no message signing); "
        "also CORRAL_INSECURE=1",
    )
    p.add_argument(
        "--max-data-mb", type=float, metavar="MB",
        default=float(os.environ.get("CORRAL_ENGINE_MAX_DATA_MB") or 16),
        help="megabytes of publish_data updates the engine holds unsent, and again in "
        "flight; a task publishing faster has superseded updates dropped (latest wins) "
        "and waits only for ever-new keys (default 16, or $CORRAL_ENGINE_MAX_DATA_MB)",
    )
    args, rest = p.parse_known_args(argv)
    if not args.max_data_mb > 0:
        p.error(f"--max-data-mb must be more than 0, not {args.max_data_mb}")
    try:
        args.shell_config = shell_config(rest)
    except ValueError as e:
        p.error(str(e))
    return args


def shell_config(options: list[str]) -> dict:
    """IPython configuration given as ipengine takes it, `--Class.trait=value` (e.g.
    `--InteractiveShell.colors=nocolor`), as `{Class: {trait: value}}`. A value is read
    as a Python literal when it is one (`True`, `3`), else kept as text."""
    config: dict = {}
    items = iter(options)
    for option in items:
        name, eq, value = option.partition("=")
        cls, dot, trait = name[2:].partition(".") if name.startswith("--") else ("", "", "")
        if not (cls and dot and trait.isidentifier()):
            raise ValueError(f"unrecognized argument: {option}")
        if not eq:
            value = next(items, None)
            if value is None:
                raise ValueError(f"{name} needs a value")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        config.setdefault(cls, {})[trait] = value
    return config


def profile_dir(args: argparse.Namespace) -> Path:
    """Like IPython: explicit dir, else `$IPYTHONDIR/profile_<name>` (default `~/.ipython`)."""
    if args.profile_dir:
        return Path(args.profile_dir).expanduser()
    ipython_dir = Path(os.environ.get("IPYTHONDIR") or Path.home() / ".ipython").expanduser()
    return ipython_dir / f"profile_{args.profile}"


def connection_file(args: argparse.Namespace) -> Path:
    if args.file:
        return Path(args.file).expanduser()
    name = "ipcontroller-engine.json"
    if args.cluster_id:
        name = f"ipcontroller-{args.cluster_id}-engine.json"
    return profile_dir(args) / "security" / name


@contextlib.contextmanager
def connection_info_file(info: str):
    """$IPP_CONNECTION_INFO (the engine connection file's JSON) as a file only this user can
    read, for as long as the engine needs it to connect; it holds the cluster key."""
    try:
        parsed = json.loads(info)
    except ValueError as e:
        raise ValueError(f"$IPP_CONNECTION_INFO is not JSON: {e}") from None
    if not isinstance(parsed, dict):
        raise ValueError("$IPP_CONNECTION_INFO is not a JSON object")
    with tempfile.TemporaryDirectory(prefix="corral-engine-") as d:  # mode 0700
        path = Path(d) / "ipcontroller-engine.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(parsed, f)
        yield path


def wait_for(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def init_mpi() -> dict:
    """Initialize MPI in this process (mpi4py's import does) and return what ipengine's
    `--mpi` puts in the user namespace: `MPI`, `mpi_rank`, `mpi_size`."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    return {"MPI": MPI, "mpi_rank": world.Get_rank(), "mpi_size": world.Get_size()}


def _terminate(signum, frame):
    from corral.engine.executor import Terminate

    raise Terminate()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    level = getattr(logging, str(args.log_level).upper(), logging.WARNING)
    logging.basicConfig(
        level=level,
        stream=sys.__stderr__,
        format="%(asctime)s [corral engine %(process)d] %(levelname)s %(message)s",
    )
    from corral import _core

    # tracing spells Python's WARNING/CRITICAL as warn/error.
    name = logging.getLevelName(level).lower()
    _core.engine_init_logging({"warning": "warn", "critical": "error"}.get(name, name))

    mpi_names: dict = {}
    if args.mpi:
        try:
            mpi_names = init_mpi()
        except ImportError as e:
            print(f"corral engine: --mpi needs mpi4py ({e}); pip install mpi4py", file=sys.stderr)
            return 1
        log.info("MPI rank %d of %d", mpi_names["mpi_rank"], mpi_names["mpi_size"])
    insecure = args.insecure or os.environ.get("CORRAL_INSECURE", "") == "1"
    info = os.environ.get("IPP_CONNECTION_INFO", "")
    try:
        with contextlib.ExitStack() as stack:
            if not args.file and info:
                log.info("connection info from $IPP_CONNECTION_INFO")
                path = stack.enter_context(connection_info_file(info))
            else:
                path = connection_file(args)
                if not wait_for(path, WAIT_FOR_FILE):
                    print(
                        f"corral engine: connection file {path} did not appear within "
                        f"{WAIT_FOR_FILE:.0f} s (is a controller running for this profile?)",
                        file=sys.stderr,
                    )
                    return 1
            # Under MPI, ask for the rank as engine id (as ipengine --mpi does), so engine
            # ids and ranks agree when the controller can grant them.
            rank = mpi_names.get("mpi_rank") if mpi_names.get("mpi_size", 1) > 1 else None
            rt = _core.EngineRuntime.connect(
                str(path), timeout=args.timeout, insecure=insecure,
                lost_grace=args.controller_grace, requested_id=rank,
                max_data_bytes=max(1, int(args.max_data_mb * 2**20)),
            )
    except PermissionError as e:
        print(f"corral engine: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"corral engine: bad connection file: {e}", file=sys.stderr)
        return 1
    except ConnectionError as e:
        print(f"corral engine: {e}", file=sys.stderr)
        return 1
    # From here a signal_request may arrive: SIGINT interrupts tasks only, never startup.
    from corral.engine.executor import Executor, Terminate, ignore_sigint, new_user_module

    signal.signal(signal.SIGINT, ignore_sigint)
    signal.signal(signal.SIGTERM, _terminate)
    # A SIGTERM anywhere from here on unregisters the engine: one that escaped (between the
    # handler's installation and the request loop's own `try`) left the controller to
    # notice the exit only after ~30 s of missed heartbeats.
    try:
        # ipengine's own words: operators and ipyparallel's tests look for this line.
        log.info("Completed registration with id %d (uuid %s)", rt.id, rt.uuid)
        # IPython is imported once registered: the Rust heart answers pings meanwhile.
        from corral.engine import compat
        from corral.engine.shell import create_shell, run_startup_files

        compat.install()
        shell = create_shell(new_user_module(), profile_dir(args), args.shell_config)
        shell.user_ns.update(mpi_names)
        run_startup_files(shell)
        return Executor(rt, shell).run()
    except Terminate:
        log.info("SIGTERM before serving requests: exiting")
        rt.close(True)
        return 0
