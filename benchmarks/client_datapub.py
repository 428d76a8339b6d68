"""Data publication seen by the client: corral.Client vs ipyparallel.Client on one stock
engine that publishes 100,000 updates while the client polls `.data` in a tight loop.
Reports how current `.data` is when `get()` returns. Run: .venv/bin/python benchmarks/client_datapub.py
"""
from pathlib import Path
import sys, time, os
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "client"))
from conftest import StockCluster

import tempfile
import corral

def pub(n):
    from ipyparallel.datapub import publish_data
    import time
    t0 = time.perf_counter()
    for i in range(n):
        publish_data({"i": i})
    return time.perf_counter() - t0

root = Path(tempfile.mkdtemp())
cl = StockCluster(root, 1)
try:
    cl.start()
    c = corral.Client(profile_dir=cl.profile_dir, timeout=30)
    c.wait_for_engines(1, 60)
    for impl in ["corral", "ipyparallel"]:
        if impl == "ipyparallel":
            import ipyparallel
            c2 = ipyparallel.Client(profile_dir=str(cl.profile_dir))
            view = c2[0]
        else:
            view = c[0]
        N = 100_000
        ar = view.apply_async(pub, N)
        reads = 0; distinct = set(); t0 = time.perf_counter()
        while not ar.ready():
            d = ar.data
            reads += 1
            if d: distinct.add(d.get("i"))
        t_ready = time.perf_counter() - t0
        eng = ar.get()
        final = ar.data.get("i") if isinstance(ar.data, dict) else None
        # how long until stock's data catches up
        t1 = time.perf_counter()
        while (ar.data or {}).get("i") != N - 1 and time.perf_counter() - t1 < 30:
            time.sleep(0.001)
        lag = time.perf_counter() - t1
        print(f"{impl}: engine publish loop {eng:.2f}s ({N/eng:,.0f}/s); ready after {t_ready:.2f}s; .data reads while running {reads:,}; distinct values seen {len(distinct):,}; final at get() = {final}; extra wait for final = {lag*1000:.0f} ms")
        if impl == "ipyparallel":
            c2.close()
    c.close()
finally:
    cl.stop()
