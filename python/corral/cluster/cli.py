"""The `corral` command: `controller`, `engine`, `cluster start|stop`."""

from __future__ import annotations

import signal
import sys


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    # Let SIGTERM unwind like Ctrl-C, so the controller stops and deletes its files.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "controller":
        from corral import _core

        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
        # The controller is pure Rust; its own clap parser reads the options.
        try:
            code = _core.controller_main(argv[1:])
        except KeyboardInterrupt:
            code = 0
        sys.exit(code)
    print("usage: corral {controller,engine,cluster} ...", file=sys.stderr)
    sys.exit(2)
