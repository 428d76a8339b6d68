"""Where a broadcast's time goes: CPU per `apply_sync(noop)` to all N engines, split by
process (client, controller, engines), and the client's own hot spots (cProfile).

    python benchmarks/broadcast_cpu.py --impl corral --engines 16 --calls 300 [--view bview]

On a machine with fewer cores than engines, a broadcast's latency is bounded by the CPU
the parties need in total: this shows whose CPU it is, by process and by thread (the engines'
threads summed over the engines). CPU times come from /proc (user + system of every
thread), so they hold under load where wall-clock times do not.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (`corral-mux`, `corral-hub`, ...) of a process. The
    main thread is `main`; threads that kept the process's name (ZeroMQ's own, in
    Python processes) are `zmq+other`."""
    out: dict[str, float] = {}
    try:
        own = Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return out
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            if task.name == str(pid):
                name = "main"
            elif name == own:
                name = "zmq+other"
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=["corral", "ipyparallel"], default="corral")
    p.add_argument("--engines", type=int, default=16)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--view", choices=["dv", "bview"], default="dv")
    p.add_argument("--top", type=int, default=25, help="client functions to list")
    p.add_argument("--perf", metavar="FILE", help="also record the controller with `perf record -g` "
                   "into FILE while the calls run (see `perf report -i FILE`)")
    p.add_argument("--perf-engine", action="store_true", help="record the first engine instead")
    args = p.parse_args()
    ipp = __import__(args.impl)
    n = args.engines
    with tempfile.TemporaryDirectory(prefix="corral-bcast-") as profile_dir:
        cluster = ipp.Cluster(n=n, profile_dir=profile_dir, cluster_id=f"bcast{os.getpid()}",
                              log_level=logging.ERROR)
        client = cluster.start_and_connect_sync()
        try:
            view = client[:] if args.view == "dv" else client.broadcast_view()
            for _ in range(20):
                assert len(view.apply_sync(workloads.noop)) == n
            controller = cluster.controller.pid
            skip = {controller, *workloads._descendants(controller)}
            engines = [q for q in workloads._descendants(os.getpid()) if q not in skip]
            before = {q: cpu_s(q) for q in [os.getpid(), controller, *engines]}
            parts = {"client": [os.getpid()], "controller": [controller], "engines": engines}
            threads_before = {k: [thread_cpu_s(q) for q in qs] for k, qs in parts.items()}
            perf = None
            if args.perf:
                perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", args.perf,
                                         "-p", str(engines[0] if args.perf_engine else controller)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                time.sleep(1.0)  # perf attaches
            profiler = cProfile.Profile()
            t0 = time.perf_counter()
            profiler.enable()
            for _ in range(args.calls):
                view.apply_sync(workloads.noop)
            profiler.disable()
            wall = time.perf_counter() - t0
            if perf is not None:
                perf.send_signal(signal.SIGINT)
                perf.wait(timeout=60)
            spent = {q: cpu_s(q) - before[q] for q in before}
            by_part = {}
            for part, qs in parts.items():
                total: dict[str, float] = {}
                for q, was in zip(qs, threads_before[part]):
                    for name, v in thread_cpu_s(q).items():
                        total[name] = total.get(name, 0.0) + v - was.get(name, 0.0)
                by_part[part] = total
            per_call = lambda s: s / args.calls * 1e3  # noqa: E731
            print(f"{args.impl} {args.view} to {n} engines, {args.calls} calls: "
                  f"{per_call(wall):.2f} ms wall per call; CPU ms per call: "
                  f"client {per_call(spent[os.getpid()]):.2f}, "
                  f"controller {per_call(spent[controller]):.2f}, "
                  f"engines {per_call(sum(spent[q] for q in engines)):.2f} "
                  f"({len(engines)} processes); load average {os.getloadavg()[0]:.1f}")
            for part, threads in by_part.items():
                print(f"{part} CPU ms per call by thread: " + ", ".join(
                    f"{k} {per_call(v):.2f}"
                    for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v > 0))
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
        finally:
            cluster.stop_cluster_sync()


if __name__ == "__main__":
    main()
