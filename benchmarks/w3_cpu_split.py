"""Where W3's time goes: CPU microseconds per task of the client, the controller and the
engines while N load-balanced noop tasks run on 2 corral engines (W3's first figure), and
the tasks/s. Their sum, against the 2 cores, is the ceiling on tasks/s.

Usage: python benchmarks/w3_cpu_split.py [N]   (default 10000; 2 rounds)
Starts its own two-engine cluster on 127.0.0.1 in a temp dir and stops it at the end.
"""

import os
import sys
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


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        cluster = corral.Cluster(n=2, profile_dir=os.path.join(d, "profile"), cluster_id="w3cpu")
        client = cluster.start_and_connect_sync()
        try:
            procs = {
                "client": [os.getpid()],
                "controller": [cluster.controller.pid],
                "engines": client[:].apply_sync(engine_pid),
            }
            view = client.load_balanced_view()
            view.map_sync(noop1, range(100))  # warm-up
            for _ in range(2):
                before = {k: sum(map(cpu_seconds, ps)) for k, ps in procs.items()}
                t0 = time.perf_counter()
                ars = [view.apply_async(noop) for _ in range(n)]
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
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10000)
