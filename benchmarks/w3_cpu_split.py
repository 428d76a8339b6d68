"""Where W3's time goes: CPU microseconds per task of the client, the controller and the
engines while N load-balanced noop tasks run on 2 corral engines (W3's first figure), and
the tasks/s. Their sum, against the 2 cores, is the ceiling on tasks/s.

Usage: python benchmarks/w3_cpu_split.py [N] [--direct] [--hwm H]
  N: tasks per round (default 10000; 2 rounds). --direct: W3's third figure instead
  (`client[:].apply_async`, N/2 calls, so N tasks). --hwm: the controller's `--hwm`
  (default: the controller's own, `auto`).
Starts its own two-engine cluster on 127.0.0.1 in a temp dir and stops it at the end.
"""

import argparse
import os
import tempfile
import time

import corral


def engine_pid():
    import os

    return os.getpid()


def noop():
    pass


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(n: int, direct: bool, hwm: str | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        cluster = corral.Cluster(n=2, profile_dir=os.path.join(d, "profile"), cluster_id="w3cpu",
                                 controller_args=["--hwm", hwm] if hwm else [])
        client = cluster.start_and_connect_sync()
        try:
            procs = {
                "client": [os.getpid()],
                "controller": [cluster.controller.pid],
                "engines": client[:].apply_sync(engine_pid),
            }
            client.load_balanced_view().map_sync(noop1, range(100))  # warm-up
            view = client[:] if direct else client.load_balanced_view()
            calls = n // 2 if direct else n
            for _ in range(2):
                before = {k: sum(map(cpu_seconds, ps)) for k, ps in procs.items()}
                t0 = time.perf_counter()
                ars = [view.apply_async(noop) for _ in range(calls)]
                for ar in ars:
                    ar.get()
                elapsed = time.perf_counter() - t0
                used = {k: sum(map(cpu_seconds, ps)) - before[k] for k, ps in procs.items()}
                total = sum(used.values())
                print(
                    f"{n / elapsed:,.0f} tasks/s; CPU µs per task: "
                    + ", ".join(f"{k} {v / n * 1e6:.0f}" for k, v in used.items())
                    + f", total {total / n * 1e6:.0f} (ceiling on 2 cores: {2 * n / total:,.0f} tasks/s)"
                )
        finally:
            cluster.stop_cluster_sync()


def noop1(x):
    return x


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=10000)
    ap.add_argument("--direct", action="store_true")
    ap.add_argument("--hwm")
    args = ap.parse_args()
    main(args.n, args.direct, args.hwm)
