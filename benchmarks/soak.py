"""Soak: many tiny load-balanced tasks through a local corral cluster, with the memory of
every process sampled, to show whether any state grows with the number of tasks.

    python benchmarks/soak.py                      # 1,000,000 tasks, 2 engines
    python benchmarks/soak.py --tasks 50000 --json soak.json

The client submits `apply_async(noop)` in batches on a load-balanced view, waits for each
batch, drops its results and purges them (here and in the controller) as a user of a long
session would. Every `--interval` seconds it samples the resident memory (RSS) of the
controller, each engine and itself. At the end it prints the samples and, per process,
the growth after warm-up, and says "flat after warm-up" only when every process stayed
within the tolerance, then what the client still holds by count (store maps, histories),
which must all be back to zero tasks. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time


def noop():
    pass


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` in MB, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def sample(procs: dict[str, int], done: int, t0: float, last: tuple[float, int]) -> dict:
    now = time.perf_counter()
    rate = (done - last[1]) / (now - last[0]) if now > last[0] else 0.0
    row = {"t_s": round(now - t0, 1), "tasks": done, "tasks_per_s": round(rate)}
    for name, pid in procs.items():
        row[name] = round(rss_mb(pid), 1)
    return row


def growth(samples: list[dict], names: list[str], warmup: float) -> dict:
    """Per process: RSS at the first sample past `warmup` of the tasks, at the end, the
    difference, and the peak after warm-up."""
    total = samples[-1]["tasks"]
    after = [s for s in samples if s["tasks"] >= warmup * total] or samples[-1:]
    out = {}
    for name in names:
        first, last = after[0][name], after[-1][name]
        out[name] = {
            "after_warmup_mb": first,
            "end_mb": last,
            "growth_mb": round(last - first, 1),
            "peak_after_warmup_mb": max(s[name] for s in after),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=1_000_000, help="tasks in all (default 1,000,000)")
    p.add_argument("--batch", type=int, default=1000, help="tasks submitted, then waited for, at a time")
    p.add_argument("--engines", type=int, default=2)
    p.add_argument("--interval", type=float, default=5.0, help="seconds between memory samples")
    p.add_argument("--warmup", type=float, default=0.2, help="fraction of the tasks counted as warm-up")
    p.add_argument(
        "--tolerance-mb", type=float, default=10.0, help="growth after warm-up still called flat (per process)"
    )
    p.add_argument(
        "--purge-engines",
        action="store_true",
        help="purge with targets='all' too, so the controller also forgets each engine's completed list",
    )
    p.add_argument("--json", help="also write the samples and the verdict to this file")
    args = p.parse_args(argv)

    import corral

    profile_dir = tempfile.mkdtemp(prefix="corral-soak-")
    cluster = corral.Cluster(
        n=args.engines, profile_dir=profile_dir, cluster_id=f"soak{os.getpid()}", log_level=logging.ERROR
    )
    client = cluster.start_and_connect_sync()
    samples: list[dict] = []
    try:
        procs = {"controller": cluster.controller.pid}
        for i, pid in enumerate(cluster.engine_pids()):
            procs[f"engine{i}"] = pid
        procs["client"] = os.getpid()
        view = client.load_balanced_view()
        view.map_sync(lambda x: x, range(100))  # warm-up: first pickles, sockets
        client.purge_everything()
        t0 = time.perf_counter()
        last = (t0, 0)
        samples.append(sample(procs, 0, t0, last))
        print(" ".join(f"{k:>11}" for k in samples[0]), flush=True)
        print(" ".join(f"{v:>11}" for v in samples[0].values()), flush=True)
        done = 0
        next_sample = t0 + args.interval
        while done < args.tasks:
            n = min(args.batch, args.tasks - done)
            ars = [view.apply_async(noop) for _ in range(n)]
            for ar in ars:
                ar.get(timeout=60)
            del ars
            client.purge_everything()
            if args.purge_engines:
                client.purge_hub_results(targets="all")
            done += n
            if time.perf_counter() >= next_sample or done == args.tasks:
                row = sample(procs, done, t0, last)
                last = (time.perf_counter(), done)
                samples.append(row)
                print(" ".join(f"{v:>11}" for v in row.values()), flush=True)
                next_sample = time.perf_counter() + args.interval
        elapsed = time.perf_counter() - t0
        # What the client still holds, by count: all back to baseline if nothing leaks.
        client_state = dict(
            client._core.stats(), history=len(client.history), view_history=len(view.history)
        )
    finally:
        cluster.stop_cluster_sync()

    names = list(procs)
    g = growth(samples, names, args.warmup)
    flat = all(v["growth_mb"] <= args.tolerance_mb for v in g.values())
    print(f"\n{args.tasks} tasks in {elapsed:.0f} s ({args.tasks / elapsed:.0f} tasks/s), batches of {args.batch}")
    print(f"RSS after warm-up ({args.warmup:.0%} of the tasks) -> end, MB:")
    for name, v in g.items():
        print(
            f"  {name:<11} {v['after_warmup_mb']:>8.1f} -> {v['end_mb']:>8.1f}"
            f"  growth {v['growth_mb']:+.1f}  peak {v['peak_after_warmup_mb']:.1f}"
        )
    verdict = (
        "flat after warm-up"
        if flat
        else f"NOT flat: some process grew more than {args.tolerance_mb} MB after warm-up"
    )
    print(verdict)
    print("client state at the end:", " ".join(f"{k}={v}" for k, v in client_state.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "tasks": args.tasks,
                    "batch": args.batch,
                    "purge_engines": args.purge_engines,
                    "engines": args.engines,
                    "elapsed_s": round(elapsed, 1),
                    "samples": samples,
                    "growth": g,
                    "client_state": client_state,
                    "tolerance_mb": args.tolerance_mb,
                    "verdict": verdict,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
