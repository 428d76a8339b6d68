"""W1 for SSH engines: corral's SSHEngineSetLauncher vs ipyparallel's, in the same run.

A real OpenSSH server on 127.0.0.1 (tests/sshd.py) is the "remote" host. Each round starts
a controller (corral's, or stock ipcontroller for ipyparallel), then times engines launched
over SSH until a client sees them all ("ready"), and the launcher's stop ("stop"). The
controller start is not timed: this compares launchers.

    python benchmarks/ssh_w1.py --repeat 3 --engines 2,4
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from sshd import SSHServer  # noqa: E402


def corral_round(sshd: SSHServer, root: Path, n: int) -> dict:
    import corral
    from corral.cluster.ssh import SSHEngineSetLauncher

    cluster = corral.Cluster(profile_dir=root / "profile", cluster_id=f"c{time.monotonic_ns()}")
    cluster.start_controller_sync()
    try:
        launcher = SSHEngineSetLauncher(
            engine_file=cluster.engine_file, profile_dir=cluster.profile_dir,
            cluster_id=cluster.cluster_id, log_dir=cluster.profile_dir / "log",
            engines={sshd.address: n}, ssh_args=sshd.ssh_args, scp_args=sshd.ssh_args,
            remote_python=sys.executable, remote_profile_dir=str(root / "remote"))
        t0 = time.perf_counter()
        launcher.start(n)
        client = cluster.connect_client_sync()
        client.wait_for_engines(n, timeout=120)
        ready = time.perf_counter() - t0
        t0 = time.perf_counter()
        launcher.stop()
        stop = time.perf_counter() - t0
        return {"ready_s": ready, "stop_s": stop}
    finally:
        cluster.stop_cluster_sync()


def ipyparallel_round(sshd: SSHServer, root: Path, n: int) -> dict:
    import ipyparallel as ipp
    from traitlets.config import Config

    config = Config()
    launcher = config.SSHEngineSetLauncher
    launcher.engines = {sshd.address: n}
    launcher.ssh_args = list(sshd.ssh_args)
    launcher.scp_args = list(sshd.ssh_args)
    launcher.remote_python = sys.executable
    launcher.remote_profile_dir = str(root / "remote")
    cluster = ipp.Cluster(n=n, engines="ssh", profile_dir=str(root / "profile"),
                          cluster_id=f"i{time.monotonic_ns()}", config=config,
                          log_level=logging.ERROR)
    cluster.start_controller_sync()
    try:
        t0 = time.perf_counter()
        cluster.start_engines_sync(n)
        client = cluster.connect_client_sync()
        client.wait_for_engines(n, timeout=120)
        ready = time.perf_counter() - t0
        client.close()
        t0 = time.perf_counter()
        cluster.stop_engines_sync()
        stop = time.perf_counter() - t0
        return {"ready_s": ready, "stop_s": stop}
    finally:
        cluster.stop_cluster_sync()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engines", default="2,4")
    args = parser.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        with SSHServer(Path(tmp) / "sshd") as sshd:
            for n in map(int, args.engines.split(",")):
                for r in range(args.repeat):
                    # alternate which goes first, so neither always runs on a warmer machine
                    order = [("corral", corral_round), ("ipyparallel", ipyparallel_round)]
                    for impl, run in order if r % 2 == 0 else order[::-1]:
                        root = Path(tmp) / f"{impl}-{n}-{r}"
                        root.mkdir()
                        for key, value in run(sshd, root, n).items():
                            results.setdefault(f"{impl} {key} n={n}", []).append(value)
    for key, values in sorted(results.items()):
        print(f"{key:32s} median {statistics.median(values):7.3f}  "
              f"({min(values):.3f}-{max(values):.3f})")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
