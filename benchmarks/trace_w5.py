"""Where W5push's publish → seen time goes: a median per hop from `publish_data` on the
engine to the client's `on_data` callback.

    .venv/bin/python benchmarks/trace_w5.py [--seconds 5] [--period 0.01]

One engine publishes `dict(t=..., i=i)` every `period` seconds; the client watches with
`ar.on_data(callback)`. With `CORRAL_TRACE` set (see `crates/wire/src/trace.rs`), the engine
runtime, the controller's IOPub relay and the client core log when each `data_message`
passes them; the publisher and the callback add their own points. A `data_message`'s
hops are joined by its msg_id, the end-to-end figure by the published `i` (an update
replaced by a newer one before it was read, latest wins, has no `p_seen`). Each trace
point costs a `write`, included in the figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from trace_w2 import trace_lines  # same folder: the scripts run from benchmarks/

#: Hops of one `data_message`, joined by its own msg_id (Rust points).
HOPS = [
    ("e_data_out", "k_data_in", "wire: engine → controller IOPub"),
    ("k_data_in", "k_data_out", "controller IOPub: verify, per-client queue, send"),
    ("k_data_out", "c_data_in", "wire: controller → client I/O thread (verified)"),
    ("c_data_in", "c_data_filed", "client I/O thread: file, wake the watcher"),
]
#: The Python edges, joined by the published `i` (a Rust point's msg_id is mapped to the
#: `i` published last before it left the engine: publications are `period` apart, hops
#: well under it).
EDGES = [
    ("e_publish", "e_queued", "engine Python: pickle, hand to the runtime"),
    ("e_queued", "e_data_out", "engine I/O thread: wake, encode, sign, send"),
]
CLIENT_EDGES = [
    ("c_data_filed", "p_woken", "client: watcher thread wakes (condvar, GIL)"),
    ("p_woken", "p_seen", "client Python: merge `ar.data`, call back"),
]
#: End to end, joined by the published `i` (Python points on both ends).
TOTAL = ("e_publish", "p_seen", "publish_data called → on_data callback (traced)")


def publisher(period, seconds, tag=""):
    """Runs on the engine: publish every `period` s, logging each publication's time."""
    import time

    from corral.datapub import publish_data
    from corral.engine.executor import trace_point

    n = int(seconds / period)
    start = time.perf_counter()
    for i in range(n):
        trace_point("e_publish", f"{tag}{i}")
        publish_data(dict(t=time.time(), i=i))
        trace_point("e_queued", f"{tag}{i}")
        delay = start + (i + 1) * period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return n


def load(folder: Path) -> dict[str, dict[str, int]]:
    """point → id → time (a msg_id for Rust points, the published `i` for Python ones)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for point, key, t in trace_lines(folder):
        out[point].setdefault(key, t)
    return out


def by_publication(points) -> None:
    """Adds each Rust point of a `data_message` under the `i` of the publication it
    carries (the last `e_queued` before the message's `e_data_out`)."""
    queued = sorted((t, i) for i, t in points.get("e_queued", {}).items() if i.isdigit())
    times = [t for t, _ in queued]
    import bisect

    for msg_id, t_out in list(points.get("e_data_out", {}).items()):
        k = bisect.bisect_right(times, t_out) - 1
        if k < 0:
            continue
        i = queued[k][1]
        for point in ("e_data_out", "c_data_filed"):
            if msg_id in points.get(point, {}):
                points[point].setdefault(i, points[point][msg_id])


def segment(points, a: str, b: str) -> list[int]:
    common = points.get(a, {}).keys() & points.get(b, {}).keys()
    return sorted(points[b][k] - points[a][k] for k in common)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--period", type=float, default=0.01)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="corral-trace-"))
    os.environ["CORRAL_TRACE"] = str(folder)
    import corral

    cluster = corral.Cluster(n=1, cluster_id=f"tracew5{time.monotonic_ns()}",
                             log_level=logging.ERROR)
    client = cluster.start_and_connect_sync()
    own = os.open(folder / f"script-{os.getpid()}.trace", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        view = client[0]
        view.apply_sync(publisher, args.period, 0.05, "warmup")  # warm-up (its points are skipped)
        last = [None]
        woken = [0]
        wait_data = client._wait_data

        def traced_wait_data(*a, **kw):
            out = wait_data(*a, **kw)
            woken[0] = time.time_ns()
            return out

        client._wait_data = traced_wait_data

        def seen(d):
            now = time.time_ns()
            if d.get("i") is not None and d["i"] != last[0]:
                last[0] = d["i"]
                os.write(own, f"p_woken {d['i']} {woken[0]}\np_seen {d['i']} {now}\n".encode())

        ar = view.apply_async(publisher, args.period, args.seconds)
        watcher = ar.on_data(seen, timeout=120)
        n = ar.get(timeout=120)
        watcher.join(timeout=30)
    finally:
        cluster.stop_cluster_sync()
        os.close(own)
    points = load(folder)
    print(f"{n} publications every {args.period * 1e3:g} ms; trace files in {folder}")
    print("\n| segment | from → to | median µs | p99 µs | n |\n|---|---|---|---|---|")
    by_publication(points)
    for a, b, what in [*EDGES, *HOPS, *CLIENT_EDGES, TOTAL]:
        ds = segment(points, a, b)
        if not ds:
            print(f"| {what} | {a} → {b} | (no data) | | |")
            continue
        print(f"| {what} | {a} → {b} | {statistics.median(ds) / 1e3:.0f} | "
              f"{ds[int(len(ds) * 0.99)] / 1e3:.0f} | {len(ds)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
