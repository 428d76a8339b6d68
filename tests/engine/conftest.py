"""A real cluster on 127.0.0.1: a STOCK ipcontroller, corral engines, a STOCK client.

Each process logs to its own file in the test's tmp dir; teardown kills every process we
started (by process group id: each is started in its own session); on failure the log
paths are printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


class Procs:
    def __init__(self, root: Path):
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        p = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        log.close()
        self.procs[name] = p
        return p

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)


def engine_cmd(profile_dir: Path) -> list[str]:
    return [sys.executable, "-m", "corral", "engine", "--profile-dir", str(profile_dir),
            "--log-level", "INFO"]


@pytest.fixture
def cluster(tmp_path, request):
    """(client, procs, profile_dir) with 2 registered corral engines."""
    ipp = pytest.importorskip("ipyparallel")
    procs = Procs(tmp_path)
    profile_dir = tmp_path / "profile"
    profile_dir.mkdir()
    client = None
    try:
        procs.start(
            "controller",
            [sys.executable, "-m", "ipyparallel.controller", "--profile-dir", str(profile_dir),
             "--ip", "127.0.0.1", "--log-level", "20"],
        )
        client_file = profile_dir / "security" / "ipcontroller-client.json"
        deadline = time.monotonic() + 30
        while not client_file.exists():
            assert time.monotonic() < deadline, "controller wrote no connection file"
            time.sleep(0.1)
        for i in range(2):
            procs.start(f"engine{i}", engine_cmd(profile_dir))
        client = ipp.Client(profile_dir=str(profile_dir), timeout=30)
        client.wait_for_engines(2, timeout=60)
        yield client, procs, profile_dir
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(f"\ncluster logs: {tmp_path}/*.log")
            for name in procs.procs:
                print(f"--- {name}.log (tail)\n{procs.log(name)[-3000:]}")
        if client is not None:
            client.close()
        procs.stop_all()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
