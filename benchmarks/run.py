"""Benchmark runner: the workloads of BENCHMARKS.md, run side by side on corral and on
stock ipyparallel through the same ipyparallel-style API (`Cluster`, `Client`, views).

    python benchmarks/run.py --impl both --workloads W1,W2,W3,W4,W5,W6,W7,W8,W9,W10 --repeat 3 --json out.json

Many engines (issue 12), not in the default list because it takes minutes per
implementation: W11 starts N engine processes at once (`CORRAL_BENCH_MANY_ENGINES`,
default 128; `make bench-many`); W10 broadcasts to 16 (`CORRAL_BENCH_BROADCAST_ENGINES`).

    CORRAL_BENCH_MANY_ENGINES=128 python benchmarks/run.py --impl both --workloads W11 --repeat 1

Each (implementation, workload) runs in its own Python process, so one cannot warm or
starve the other. Figures are medians of `--repeat` runs, with min and max.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402

IMPLS = ("corral", "ipyparallel")


def run_worker(impl: str, workload: str, repeat: int, timeout: float) -> dict:
    """One workload on one implementation, in a fresh interpreter."""
    cmd = [sys.executable, str(HERE / "run.py"), "--worker", impl, workload, str(repeat)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]}


def summarize(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def worker(impl: str, workload: str, repeat: int) -> None:
    module = __import__(impl)
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as profile_dir:
        for _ in range(repeat):
            for name, value in getattr(workloads, workload)(module, impl, profile_dir).items():
                runs.setdefault(name, []).append(value)
    print(json.dumps({name: summarize(values) for name, values in runs.items()}))


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def print_table(results: dict) -> None:
    impls = [i for i in IMPLS if i in results]
    rows = []
    for workload in sorted({w for r in results.values() for w in r}):
        figures = sorted({f for i in impls for f in results[i].get(workload, {}) if f != "error"})
        for figure in figures:
            cells = []
            for impl in impls:
                s = results[impl].get(workload, {}).get(figure)
                cells.append(f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})" if s else "—")
            ratio = ""
            if len(impls) == 2 and all(results[i].get(workload, {}).get(figure) for i in impls):
                a = results["corral"][workload][figure]["median"]
                b = results["ipyparallel"][workload][figure]["median"]
                if a and b:
                    better_low = workloads.LOWER_IS_BETTER.get(figure, False)
                    ratio = f"{(b / a if better_low else a / b):.1f}×"
            rows.append((workload, figure, *cells, ratio))
        for impl in impls:
            err = results[impl].get(workload, {}).get("error")
            if err:
                rows.append((workload, f"error ({impl})", str(err)[:60], "", ""))
    header = ("workload", "figure", *impls, "corral advantage" if len(impls) == 2 else "")
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=[*IMPLS, "both"], default="both")
    p.add_argument("--workloads", default="W1,W2,W3,W4,W5,W6,W7,W8,W9,W10")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per workload and implementation")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    impls = IMPLS if args.impl == "both" else (args.impl,)
    results: dict = {impl: {} for impl in impls}
    for workload in args.workloads.split(","):
        for impl in impls:
            t0 = time.monotonic()
            results[impl][workload] = run_worker(impl, workload, args.repeat, args.timeout)
            print(f"# {workload} on {impl}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M"), "results": results}, indent=2))


if __name__ == "__main__":
    main()
