"""publish_data calls/s from a Python loop on one corral engine (stock controller + client).

Usage: python benchmarks/engine_publish_data.py [N]. Starts its own cluster in a temp dir
and stops it afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bench(n):
    import time as _t

    from corral.datapub import publish_data

    t0 = _t.perf_counter()
    for i in range(n):
        publish_data({"i": i})
    small = n / (_t.perf_counter() - t0)
    import numpy as np

    a = np.random.rand(20)
    t0 = _t.perf_counter()
    for i in range(n):
        publish_data({"a": a, "i": i})
    arr20 = n / (_t.perf_counter() - t0)
    return small, arr20


bench.__module__ = "__main__"


def main() -> int:
    import ipyparallel as ipp

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    procs = []

    def start(name, cmd):
        log = open(tmp / f"{name}.log", "wb")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))

    try:
        start("controller", [sys.executable, "-m", "ipyparallel.controller",
                             "--profile-dir", str(tmp), "--ip", "127.0.0.1"])
        f = tmp / "security" / "ipcontroller-client.json"
        deadline = time.monotonic() + 30
        while not f.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        start("engine", [sys.executable, "-m", "corral", "engine", "--profile-dir", str(tmp)])
        c = ipp.Client(profile_dir=str(tmp), timeout=30)
        c.wait_for_engines(1, timeout=60)
        small, arr20 = c[0].apply_sync(bench, n)
        print(f"publish_data, {n} calls in a loop on one corral engine:")
        print(f"  {{'i': i}}                      {small:,.0f} calls/s")
        print(f"  {{'a': rand(20), 'i': i}}       {arr20:,.0f} calls/s")
        c.close()
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
