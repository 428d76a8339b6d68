"""A real IPython shell to drive the magics from, and a cluster of stock ``ipengine``s
behind corral's controller (engines that are IPython kernels: rich output, signals)."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import corral
from cluster_processes import Processes, start_corral_controller, stock_engine_argv


@pytest.fixture
def shell(tmp_path, monkeypatch):
    """The process's IPython shell, as a notebook or ``ipython`` has one: made before the
    client (which then registers %px on it), history in memory, no colors; gone after
    the test, so other tests do not run "inside IPython"."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    config.InteractiveShell.colors = "nocolor"
    config.InteractiveShell.autocall = 0
    ip = InteractiveShell.instance(config=config)
    try:
        yield ip
    finally:
        from corral.client.magics import ParallelMagics

        for magic in ip.magics_manager.magics["line"].values():
            owner = getattr(magic, "__self__", None)
            if isinstance(owner, ParallelMagics) and owner._autopx is not None:
                owner.autopx()  # a failed test may leave %autopx on: give run_cell back
        InteractiveShell.clear_instance()


@pytest.fixture
def stock_cluster(tmp_path, request):
    """Factory: ``stock_cluster(n)`` -> a corral client on corral's controller with ``n``
    stock ipengines; every process is stopped at teardown."""
    procs = Processes(tmp_path)
    clients = []
    failed_before = request.session.testsfailed

    def start(n: int = 2) -> corral.Client:
        start_corral_controller(procs, tmp_path)
        for i in range(n):
            procs.start(f"engine{i}", stock_engine_argv(tmp_path))
        client = corral.Client(profile_dir=str(tmp_path))
        clients.append(client)
        client.wait_for_engines(n, timeout=60)
        return client

    try:
        yield start
    finally:
        for client in clients:
            client.close()
        procs.stop_all()
        if request.session.testsfailed > failed_before:
            print(procs.report())
