"""Where W2's `apply_sync(noop)` time goes: a median per hop, client → controller →
engine → controller → client.

    .venv/bin/python benchmarks/trace_w2.py [--calls 2000] [--warmup 200]

Starts a corral cluster of one engine with `CORRAL_TRACE` set to a fresh directory, so
every corral process (client core, controller, engine runtime and executor) appends
`<point> <msg_id> <ns>` lines there (wall clock, shared by the processes; see
`crates/wire/src/trace.rs`). This script adds its own points around each call, joins the
files by msg_id and prints the median of every segment. Each trace point is one `write`
system call (a few µs), included in the figures: compare segments, not totals, with an
untraced run (`benchmarks/run.py --workloads W2`).
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

#: The reply's path, in order: (from, to, what happens in between).
REPLY_PATH = [
    ("p_start", "c_submit", "client Python: view, pickle f/args, JSON (to the Rust core)"),
    ("c_submit", "c_pushed", "client core: record, sign, encode, push to the I/O thread"),
    ("c_pushed", "c_sent", "client: I/O thread wakes, sends on the mux socket"),
    ("c_sent", "k_req_in", "wire: client → controller"),
    ("k_req_in", "k_req_out", "controller MUX: verify, parse, hub copy, route"),
    ("k_req_out", "e_req_in", "wire: controller → engine (Rust I/O thread, verified)"),
    ("e_req_in", "e_run_start", "engine: hand-off to the Python main thread"),
    ("e_run_start", "e_run_end", "engine Python: unpickle, run, pickle result"),
    ("e_run_end", "e_reply_out", "engine: reply queued, encoded, sent by the I/O thread"),
    ("e_reply_out", "k_reply_in", "wire: engine → controller"),
    ("k_reply_in", "k_reply_out", "controller MUX: verify, hub copy, route back"),
    ("k_reply_out", "c_reply_in", "wire: controller → client I/O thread (verified)"),
]
#: The engine's `status: idle`, which a result also waits for (ar.data final at get()).
IDLE_PATH = [
    ("e_reply_out", "e_idle_out", "engine: idle sent after the reply"),
    ("e_idle_out", "k_idle_in", "wire: engine → controller IOPub"),
    ("k_idle_in", "k_idle_out", "controller IOPub: verify, per-client queue, send"),
    ("k_idle_out", "c_idle_in", "wire: controller → client (corral IOPub)"),
]
END = [
    ("last_in", "c_filed", "client I/O thread: file in the store, wake waiters"),
    ("c_filed", "p_end", "client Python: wake from wait, unpickle, get() returns"),
]


def noop():
    pass


def trace_lines(folder: Path):
    """`(point, id, ns)` of every well-formed line of the processes' trace files."""
    for f in folder.glob("*.trace"):
        for line in f.read_text().splitlines():
            try:
                point, key, ns = line.split()
                yield point, key, int(ns)
            except ValueError:
                continue


def load(folder: Path) -> dict[str, dict[str, int]]:
    """msg_id → point → ns (the first time each point was reached; `c_filed` the last)."""
    points: dict[str, dict[str, int]] = defaultdict(dict)
    for point, msg_id, t in trace_lines(folder):
        seen = points[msg_id]
        if point == "c_filed":
            seen[point] = max(seen.get(point, 0), t)
        else:
            seen.setdefault(point, t)
    return points


def report(points: dict[str, dict[str, int]], msg_ids: list[str]) -> str:
    rows = []
    for m in msg_ids:
        p = points.get(m, {})
        if "c_reply_in" in p and "c_idle_in" in p:
            p["last_in"] = max(p["c_reply_in"], p["c_idle_in"])
    lines = ["| segment | from → to | median µs |", "|---|---|---|"]

    def segment(a: str, b: str, what: str) -> None:
        ds = [points[m][b] - points[m][a] for m in msg_ids
              if a in points.get(m, {}) and b in points.get(m, {})]
        if not ds:
            lines.append(f"| {what} | {a} → {b} | (no data) |")
            return
        rows.append(ds)
        lines.append(f"| {what} | {a} → {b} | {statistics.median(ds) / 1e3:.0f} |")

    lines.append("| **reply path** | | |")
    for a, b, what in REPLY_PATH:
        segment(a, b, what)
    lines.append("| **idle path (in parallel with the reply's return)** | | |")
    for a, b, what in IDLE_PATH:
        segment(a, b, what)
    lines.append("| **end** | | |")
    for a, b, what in END:
        segment(a, b, what)
    segment("c_reply_in", "c_idle_in", "idle arrives after the reply by")
    segment("p_start", "p_end", "total (traced)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="corral-trace-"))
    # Set before anything starts, so the controller and engine processes inherit it.
    os.environ["CORRAL_TRACE"] = str(folder)
    import corral

    cluster = corral.Cluster(n=1, cluster_id=f"trace{time.monotonic_ns()}",
                             log_level=logging.ERROR)
    client = cluster.start_and_connect_sync()
    own = os.open(folder / f"script-{os.getpid()}.trace", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    msg_ids = []
    try:
        view = client[0]
        for _ in range(args.warmup):
            view.apply_sync(noop)
        totals = []
        for _ in range(args.calls):
            t0 = time.time_ns()
            ar = view.apply_async(noop)
            ar.get(timeout=30)
            t1 = time.time_ns()
            m = ar.msg_ids[0]
            msg_ids.append(m)
            totals.append(t1 - t0)
            os.write(own, f"p_start {m} {t0}\np_end {m} {t1}\n".encode())
    finally:
        cluster.stop_cluster_sync()
        os.close(own)
    points = load(folder)
    print(f"{args.calls} traced apply_async(noop).get() calls, one engine; trace files in {folder}")
    print(f"median total {statistics.median(totals) / 1e3:.0f} µs\n")
    print(report(points, msg_ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
