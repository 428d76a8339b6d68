"""An `ipcontroller`-compatible front for corral's controller, for running ipyparallel's
own test suite against it (see run.sh). Translates the ipcontroller options the suite and
ipyparallel's launchers pass; options corral has no equivalent for are reported and ignored.
"""

from __future__ import annotations

import os
import sys


def translate(argv: list[str]) -> tuple[list[str], list[str]]:
    """ipcontroller argv -> (corral controller argv, ignored options)."""
    opts: dict[str, str] = {}
    ignored: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--"):
            ignored.append(arg)
            continue
        name, eq, value = arg[2:].partition("=")
        name = name.replace("_", "-")
        if name in ("profile", "profile-dir", "cluster-id", "ip", "log-level", "ping") and not eq:
            value = argv[i] if i < len(argv) else ""
            i += 1
        if name in ("profile", "profile-dir", "cluster-id", "ip", "log-level", "ping"):
            opts[name] = value
        elif name in ("IPController.cluster-id", "BaseParallelApplication.cluster-id"):
            opts["cluster-id"] = value
        elif name in ("HeartMonitor.period",):
            opts["ping"] = value
        else:
            ignored.append(arg)

    out: list[str] = []
    profile_dir = opts.get("profile-dir")
    if not profile_dir:
        from IPython.paths import get_ipython_dir

        profile_dir = os.path.join(get_ipython_dir(), f"profile_{opts.get('profile', 'default')}")
    os.makedirs(os.path.join(profile_dir, "security"), exist_ok=True)
    out += ["--profile-dir", profile_dir]
    if opts.get("cluster-id"):
        out += ["--cluster-id", opts["cluster-id"]]
    ip = opts.get("ip", "127.0.0.1")
    out += ["--ip", "127.0.0.1" if ip in ("", "*", "0.0.0.0", "localhost") else ip]
    level = opts.get("log-level", "info")
    numeric = {"10": "debug", "20": "info", "30": "warning", "40": "error", "50": "critical"}
    out += ["--log-level", numeric.get(level, level)]
    if opts.get("ping"):
        out += ["--hb-period", str(int(float(opts["ping"])))]
    return out, ignored


def main() -> None:
    args, ignored = translate(sys.argv[1:])
    if ignored:
        print(f"ipcontroller_shim: ignoring {ignored}", file=sys.stderr, flush=True)
    print(f"ipcontroller_shim: corral controller {' '.join(args)}", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "corral", "controller", *args])


if __name__ == "__main__":
    main()
