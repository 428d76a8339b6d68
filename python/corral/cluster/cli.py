"""The `corral` command: `controller`, `engine`, `cluster start|stop`, `watch`, `export`."""

from __future__ import annotations

import os
import signal
import sys

USAGE = """usage: corral <command> [options]

commands:
  controller   run a controller (Rust) that writes ipyparallel-format connection files
  engine       run one engine that connects to a controller
  cluster      start or stop a local cluster: `corral cluster start -n 4 --daemonize`,
               `corral cluster stop`
  watch        follow a task's published data live: `corral watch MSG_ID`, or the
               engines: `corral watch --cluster`
  export       write a task's published data history to a file:
               `corral export MSG_ID --to data.npz`
"""


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    # Let SIGTERM unwind like Ctrl-C, so the controller stops and deletes its files.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "controller":
        from corral import _core

        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
        # The dask scheduler of `become_dask()` runs with this interpreter unless told
        # otherwise (--python or $CORRAL_PYTHON).
        if not (os.environ.get("CORRAL_PYTHON")
                or any(a == "--python" or a.startswith("--python=") for a in rest)):
            rest = ["--python", sys.executable, *rest]
        # The controller is pure Rust; its own clap parser reads the options.
        try:
            code = _core.controller_main(rest)
        except KeyboardInterrupt:
            code = 0
        sys.exit(code)
    if command == "engine":
        from corral.engine.app import main as engine_main

        sys.exit(engine_main(rest))
    if command == "cluster":
        from corral.cluster.command import main as cluster_main

        sys.exit(cluster_main(rest))
    if command == "watch":
        from corral.watch import main as watch_main

        sys.exit(watch_main(rest))
    if command == "export":
        from corral.export import main as export_main

        sys.exit(export_main(rest))
    print(USAGE, file=sys.stderr, end="")
    sys.exit(0 if command in ("-h", "--help") else 2)
