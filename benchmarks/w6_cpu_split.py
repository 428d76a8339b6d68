"""Where W6's time goes: CPU seconds of client, controller and engine while one corral
engine publishes N 8 MB arrays, and the end-to-end MB/s.

Usage: python benchmarks/w6_cpu_split.py [N] [--distinct]
With --distinct every publication has a new key (`a0`, `a1`, ...), so nothing can be
conflated and every byte reaches the client: the delivered rate. Without it, as W6:
`dict(a=a, i=i)`, where superseded updates may be skipped (latest wins).
Starts its own one-engine cluster on 127.0.0.1 in a temp dir and stops it at the end.
"""

import os
import sys
import tempfile
import time

import corral


def engine_pid():
    import os

    return os.getpid()


def publisher(n, mb, distinct):
    import numpy as np

    from corral.datapub import publish_data

    a = np.zeros(mb * 2**20 // 8)
    for i in range(n):
        a[0] = i
        publish_data({f"a{i}": a, "i": i} if distinct else {"a": a, "i": i})


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in os.listdir(f"/proc/{p}/task"):
            todo += [int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split()]
    return out


def main(n: int, distinct: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        cluster = corral.Cluster(n=1, profile_dir=os.path.join(d, "profile"), cluster_id="w6cpu")
        client = cluster.start_and_connect_sync()
        try:
            view = client[0]
            epid = view.apply_sync(engine_pid)
            procs = {
                "client": [os.getpid()],
                "controller": [p for p in descendants(cluster.controller.pid) if p != epid],
                "engine": [epid],
            }
            view.apply_sync(publisher, 1, 1, distinct)  # warm-up
            for _ in range(3):
                before = {k: sum(map(cpu_seconds, ps)) for k, ps in procs.items()}
                t0 = time.perf_counter()
                ar = view.apply_async(publisher, n, 8, distinct)
                deadline = time.monotonic() + 120
                while ar.data.get("i") != n - 1 and time.monotonic() < deadline:
                    time.sleep(0.001)
                elapsed = time.perf_counter() - t0
                ar.get(timeout=60)
                used = {k: sum(map(cpu_seconds, ps)) - before[k] for k, ps in procs.items()}
                print(
                    f"{n} x 8 MB{' (distinct keys)' if distinct else ''}: {n * 8 / elapsed:.0f} MB/s,"
                    f" {elapsed:.2f} s; CPU s " + ", ".join(f"{k} {v:.2f}" for k, v in used.items())
                )
        finally:
            cluster.stop_cluster_sync()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(int(args[0]) if args else 50, "--distinct" in sys.argv)
