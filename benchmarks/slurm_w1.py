"""W1 on Slurm: 2 engines started by `sbatch` until the client sees them, then stopped until
`squeue` no longer lists the job; corral's SlurmEngineSetLauncher vs ipyparallel's, in the
same run, on one single-node Slurm started for the run (tests/slurm.py).

    python benchmarks/slurm_w1.py --repeat 3

The controller starts before the clock: both sides time only the engines' path through
Slurm. ipyparallel's `stop_engines` returns after `scancel`; the time to an empty `squeue`
is measured for both so the figures compare the same thing. Opt-in; never run by `make test`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from slurm import start_single_node_slurm  # noqa: E402


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def corral_once(slurm, profile_dir: Path, n: int) -> dict:
    import corral
    from corral.cluster.batch import SlurmEngineSetLauncher

    cluster = corral.Cluster(profile_dir=profile_dir, cluster_id="w1")
    cluster.start_controller_sync()
    try:
        launcher = SlurmEngineSetLauncher(
            engine_file=cluster.engine_file, profile_dir=profile_dir, cluster_id="w1",
            log_dir=profile_dir / "log",
        )
        t0 = time.perf_counter()
        launcher.start(n)
        client = cluster.connect_client_sync()
        client.wait_for_engines(n, timeout=120)
        ready = time.perf_counter() - t0
        t0 = time.perf_counter()
        launcher.stop()
        _wait(lambda: launcher.job_id not in slurm.jobs(), 120, "squeue to drop the job")
        stop = time.perf_counter() - t0
    finally:
        cluster.stop_cluster_sync()
    return {"ready_s": ready, "stop_s": stop}


def ipyparallel_once(slurm, profile_dir: Path, n: int) -> dict:
    import ipyparallel as ipp

    cluster = ipp.Cluster(n=n, engines="slurm", profile_dir=str(profile_dir), cluster_id="w1", log_level=30)
    cluster.start_controller_sync()
    try:
        t0 = time.perf_counter()
        cluster.start_engines_sync(n)
        client = cluster.connect_client_sync()
        client.wait_for_engines(n, timeout=120)
        ready = time.perf_counter() - t0
        job_ids = [launcher.job_id for launcher in cluster.engines.values()]
        client.close()
        t0 = time.perf_counter()
        cluster.stop_engines_sync()
        _wait(lambda: not set(job_ids) & set(slurm.jobs()), 120, "squeue to drop the job")
        stop = time.perf_counter() - t0
    finally:
        cluster.stop_cluster_sync()
    return {"ready_s": ready, "stop_s": stop}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("-n", type=int, default=2, help="engines (the node has this machine's CPUs)")
    args = p.parse_args()
    slurm = start_single_node_slurm()
    os.environ["SLURM_CONF"] = str(slurm.conf)
    work = Path(tempfile.mkdtemp(prefix="corral-slurm-w1-"))
    os.chdir(work)  # ipyparallel writes its batch script into the current directory
    results: dict[str, list[dict]] = {"corral": [], "ipyparallel": []}
    try:
        for i in range(args.repeat):
            for impl, once in (("corral", corral_once), ("ipyparallel", ipyparallel_once)):
                profile_dir = work / f"{impl}-{i}"
                results[impl].append(once(slurm, profile_dir, args.n))
                print(impl, i, {k: round(v, 3) for k, v in results[impl][-1].items()}, flush=True)
    finally:
        slurm.stop()
        shutil.rmtree(slurm.root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nW1 on Slurm, {args.n} engines, median (min-max) of {args.repeat}:")
    print("| measure | corral | ipyparallel |\n|---|---|---|")
    for key, label in (("ready_s", f"{args.n} engines ready (s)"), ("stop_s", "stop until squeue empty (s)")):
        cells = []
        for impl in ("corral", "ipyparallel"):
            values = [r[key] for r in results[impl]]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"| {label} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
