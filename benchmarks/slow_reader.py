"""A reader that stops reading while engines publish 8 MB arrays at full rate: how much
memory does the controller take? (issue 10, "no reader left behind")

    python benchmarks/slow_reader.py --impl both --seconds 6

For each implementation: a local cluster of `--engines` engines; a raw ZeroMQ subscriber
that subscribes and never reads (stock: a SUB on the controller's IOPub PUB; corral: a
DEALER subscribed on `corral_iopub`, and with `--stock-sub-on-corral` also a SUB on corral's
PUB, which stock clients use); then every engine publishes an 8 MB array in a loop for
`--seconds` while this process's client waits for the results. Reported: the peak resident
memory of the controller's process tree (stock ipcontroller runs its relays in child
processes, so their memory is summed), sampled every 20 ms, and whether the live client
got its results. The run is stopped early if the controller passes `--abort-mb`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MB = 1 << 20

SUBSCRIBER = '''
import json, sys, time
import zmq
from jupyter_client.session import Session

info = json.load(open(sys.argv[1]))
kind = sys.argv[2]
ctx = zmq.Context()
if kind == "corral":
    sock = ctx.socket(zmq.DEALER)
    sock.connect("%s:%d" % (info["interface"], info["corral_iopub"]))
    Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"]).send(
        sock, "iopub_subscribe_request", {})
else:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect("%s:%d" % (info["interface"], info["iopub"]))
print("SUBSCRIBED", flush=True)
time.sleep(3600)  # never reads
'''


def publish(seconds, package):
    import importlib
    import time

    import numpy as np

    publish_data = importlib.import_module(package + ".datapub").publish_data
    a = np.zeros(1 << 20)  # 8 MB of float64
    i = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        a[0] = i
        publish_data({"a": a, "i": i})
        i += 1
    return i


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class Watch:
    def __init__(self, pid: int, abort_bytes: int, on_abort) -> None:
        self.pid, self.peak, self.aborted = pid, 0, False
        self._stop = threading.Event()
        self._abort_bytes, self._on_abort = abort_bytes, on_abort
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            rss = tree_rss(self.pid)
            self.peak = max(self.peak, rss)
            if rss > self._abort_bytes and not self.aborted:
                self.aborted = True
                self._on_abort()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def run(impl: str, engines: int, seconds: float, abort_mb: int, stock_sub_on_corral: bool) -> dict:
    module = __import__(impl)
    with tempfile.TemporaryDirectory(prefix="corral-slow-reader-") as tmp:
        kwargs = dict(n=engines, profile_dir=str(Path(tmp) / "profile"), cluster_id="slow")
        cluster = module.Cluster(**kwargs)
        client = cluster.start_and_connect_sync()
        subs: list[subprocess.Popen] = []
        try:
            client.wait_for_engines(engines, timeout=120)
            if impl == "corral":
                controller_pid = cluster.controller.pid
                client_file = cluster.client_file
            else:
                controller_pid = cluster.controller.process.pid
                client_file = Path(cluster.profile_dir) / "security" / f"ipcontroller-{cluster.cluster_id}-client.json"
            script = Path(tmp) / "subscriber.py"
            script.write_text(SUBSCRIBER)
            kinds = ["corral"] if impl == "corral" else ["stock"]
            if impl == "corral" and stock_sub_on_corral:
                kinds.append("stock")
            for kind in kinds:
                sub = subprocess.Popen([sys.executable, str(script), str(client_file), kind],
                                       stdout=subprocess.PIPE, text=True)
                subs.append(sub)
                assert sub.stdout.readline().startswith("SUBSCRIBED")
            time.sleep(1.0)
            baseline = tree_rss(controller_pid)
            abort = threading.Event()
            watch = Watch(controller_pid, abort_mb * MB, abort.set)
            view = client[:]
            ar = view.apply_async(publish, seconds, impl)
            t0 = time.monotonic()
            while not ar.ready() and not abort.is_set() and time.monotonic() - t0 < seconds + 120:
                time.sleep(0.1)
            got = ar.ready()
            counts = ar.get(timeout=1) if got else None
            time.sleep(1.0)
            peak = watch.stop()
            return {
                "impl": impl,
                "stuck_subscribers": kinds,
                "baseline_mb": round(baseline / MB, 1),
                "peak_mb": round(peak / MB, 1),
                "aborted_over_mb": abort_mb if watch.aborted else None,
                "live_client_got_results": got,
                "publications": counts,
            }
        finally:
            for sub in subs:
                sub.kill()
                sub.wait(10)
                sub.stdout.close()
            try:
                client.close()
            finally:
                cluster.stop_cluster_sync()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", default="both", choices=["corral", "ipyparallel", "both"])
    p.add_argument("--engines", type=int, default=2)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--abort-mb", type=int, default=4000)
    p.add_argument("--stock-sub-on-corral", action="store_true",
                   help="also leave a stuck stock SUB on corral's PUB (what a stock client uses)")
    args = p.parse_args()
    impls = ["corral", "ipyparallel"] if args.impl == "both" else [args.impl]
    for impl in impls:
        print(json.dumps(run(impl, args.engines, args.seconds, args.abort_mb,
                             args.stock_sub_on_corral)), flush=True)


if __name__ == "__main__":
    main()
