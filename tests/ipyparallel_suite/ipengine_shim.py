"""An `ipengine`-compatible front for corral's engine, for running ipyparallel's own test
suite with corral engines (see run.sh, IPP_SUITE_ENGINES=corral). Translates the ipengine
options the suite and ipyparallel's launchers pass on the command line (the IPython shell's
`--InteractiveShell.trait=value` as they are); options corral has no equivalent for are
reported and ignored. It deliberately does NOT read the environment
(`IPP_CONNECTION_INFO`, `IPP_PROFILE_DIR`, ...): that is the engine's own job, and the suite
should see whether the engine does it.
"""

from __future__ import annotations

import sys

#: ipengine option name -> corral engine option, for options taking a value.
VALUED = {
    "profile": "--profile",
    "profile-dir": "--profile-dir",
    "cluster-id": "--cluster-id",
    "IPEngine.cluster-id": "--cluster-id",
    "BaseParallelApplication.cluster-id": "--cluster-id",
    "url-file": "--file",
    "file": "--file",
    "IPEngine.url-file": "--file",
    "log-level": "--log-level",
}
LEVELS = {"10": "DEBUG", "20": "INFO", "30": "WARNING", "40": "ERROR", "50": "CRITICAL"}


def translate(argv: list[str]) -> tuple[list[str], list[str]]:
    """ipengine argv -> (corral engine argv, ignored options)."""
    out: list[str] = []
    ignored: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--"):
            ignored.append(arg)
            continue
        name, eq, value = arg[2:].partition("=")
        if name.startswith("InteractiveShell."):  # shell config: corral engine takes it too
            out.append(arg if eq else f"{arg}={argv[i] if i < len(argv) else ''}")
            i += 0 if eq else 1
            continue
        name = name.replace("_", "-")
        if name not in VALUED:
            ignored.append(arg)
            continue
        if not eq:
            value = argv[i] if i < len(argv) else ""
            i += 1
        if name == "log-level":
            value = LEVELS.get(value, value)
        out += [VALUED[name], value]
    return out, ignored


def main() -> None:
    import os

    args, ignored = translate(sys.argv[1:])
    if ignored:
        print(f"ipengine_shim: ignoring {ignored}", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "corral", "engine", *args])


if __name__ == "__main__":
    main()
