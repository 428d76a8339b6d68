"""A stock ipyparallel cluster (ipcontroller + 2 ipengines) on 127.0.0.1 for the corral
client to talk to. Every process logs to its own file in the cluster's tmp dir; teardown
kills each process group we started, by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import corral


def _become_subreaper():
    """Orphans of our processes (an engine's nanny outlives its engine) are reparented to
    us instead of to PID 1, so teardown can kill and reap them instead of leaving zombies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def _our_orphans(known: set[int]) -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in known:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.append(int(entry))
    return found


_become_subreaper()

# Every process any cluster here started itself (so teardown of one cluster never takes
# another cluster's processes for orphans).
_SPAWNED: set[int] = set()


class StockCluster:
    def __init__(self, root: Path, n_engines: int):
        self.profile_dir = root / "profile"
        self.profile_dir.mkdir()
        self.root = root
        self.n_engines = n_engines
        self.procs: dict[str, subprocess.Popen] = {}

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: the nanny goes with its engine
        )
        log.close()
        _SPAWNED.add(proc.pid)
        self.procs[name] = proc
        return proc

    def start(self):
        self._spawn(
            "controller",
            ["ipyparallel.controller", "--profile-dir", str(self.profile_dir),
             "--ip", "127.0.0.1", "--log-level", "DEBUG"],
        )
        url = self.profile_dir / "security" / "ipcontroller-client.json"
        deadline = time.monotonic() + 60
        while not url.exists():
            if time.monotonic() > deadline or self.procs["controller"].poll() is not None:
                raise RuntimeError(f"controller did not start; see {self.logs()}")
            time.sleep(0.1)
        for i in range(self.n_engines):
            self.add_engine(f"engine{i}")

    def add_engine(self, name):
        self._spawn(name, ["ipyparallel.engine", "--profile-dir", str(self.profile_dir)])

    def logs(self) -> str:
        return ", ".join(str(self.root / f"{n}.log") for n in self.procs)

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(timeout=10)
        # Orphans reparented to us (see _become_subreaper): kill and reap them, by pid.
        known = _SPAWNED
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            orphans = _our_orphans(known)
            if not orphans:
                break
            for pid in orphans:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, os.WNOHANG)
                except (ProcessLookupError, ChildProcessError):
                    pass
            time.sleep(0.05)


def _cluster(tmp_path_factory, request, n):
    cluster = StockCluster(tmp_path_factory.mktemp("stock"), n)
    failed_before = request.session.testsfailed
    try:
        cluster.start()
        client = corral.Client(profile_dir=cluster.profile_dir, timeout=30)
        client.wait_for_engines(n, timeout=90)
        cluster.client = client
        yield cluster
        client.close()
    finally:
        cluster.stop()
        if request.session.testsfailed > failed_before:
            print(f"\nstock cluster logs: {cluster.logs()}")


@pytest.fixture(scope="module")
def stock(tmp_path_factory, request):
    """A stock cluster with 2 engines shared by a module's tests; ``stock.client`` is a
    connected ``corral.Client``."""
    yield from _cluster(tmp_path_factory, request, 2)


@pytest.fixture
def fresh_stock(tmp_path_factory, request):
    """A stock cluster of its own (for tests that kill engines)."""
    yield from _cluster(tmp_path_factory, request, 2)
