"""A real cluster on 127.0.0.1: a STOCK ipcontroller, corral engines, a STOCK client.

Each process logs to its own file in the test's tmp dir; teardown stops every process we
started (by process group id); on failure the logs' tails are printed.
"""

from __future__ import annotations

import pytest
from cluster_processes import Processes, corral_engine_argv, start_stock_controller


@pytest.fixture
def cluster(tmp_path, request):
    """(client, procs, profile_dir) with 2 registered corral engines."""
    ipp = pytest.importorskip("ipyparallel")
    procs = Processes(tmp_path)
    profile_dir = tmp_path / "profile"
    profile_dir.mkdir()
    client = None
    try:
        start_stock_controller(procs, profile_dir)
        for i in range(2):
            procs.start(f"engine{i}", corral_engine_argv(profile_dir))
        client = ipp.Client(profile_dir=str(profile_dir), timeout=30)
        client.wait_for_engines(2, timeout=60)
        yield client, procs, profile_dir
    finally:
        failed = getattr(request.node, "rep_call", None)  # set by tests/conftest.py
        if failed is not None and failed.failed:
            print(procs.report())
        if client is not None:
            client.close()
        procs.stop_all()

