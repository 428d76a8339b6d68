"""The `corral` command: `controller`, `engine`, `cluster start|stop`."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "controller":
        from corral import _core

        # The controller is pure Rust; its own clap parser reads the options.
        sys.exit(_core.controller_main(argv[1:]))
    print("usage: corral {controller,engine,cluster} ...", file=sys.stderr)
    sys.exit(2)
