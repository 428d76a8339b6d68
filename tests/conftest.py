"""Fixtures that start real corral clusters on 127.0.0.1 and always clean them up."""

from __future__ import annotations

import signal

import cloudpickle
import pytest

import corral

# A shell without job control starts background commands (`make test &`) with SIGINT
# ignored, which every child inherits: Python then installs no KeyboardInterrupt handler,
# and the tests that press Ctrl-C (in this process or in a `corral` command) fail. A
# handler of our own is reset to the default in the processes we start.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def procs(tmp_path, request):
    """Hand-assembled peers (see tests/cluster_processes.py), all stopped at teardown;
    their logs are printed when the test failed."""
    from cluster_processes import Processes

    p = Processes(tmp_path)
    failed_before = request.session.testsfailed
    yield p
    p.stop_all()
    if request.session.testsfailed > failed_before:
        print(p.report())


@pytest.fixture(autouse=True)
def _send_test_functions_by_value(request):
    """Engines cannot import test modules: send their functions by value, as a notebook's."""
    if request.module.__name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(request.module)


def _print_logs(cluster) -> None:
    log_dir = cluster.profile_dir / "log"
    print(f"cluster logs are in {log_dir}")
    for log in sorted(log_dir.glob("*.log")) if log_dir.exists() else []:
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def start_cluster(tmp_path, request):
    """Factory: `start_cluster(n)` -> (cluster, client); every cluster is stopped at teardown."""
    clusters = []

    def start(n: int = 2, **kwargs):
        cluster = corral.Cluster(n=n, profile_dir=tmp_path / "profile", cluster_id=f"t{len(clusters)}", engine_timeout=60, **kwargs)
        clusters.append(cluster)
        client = cluster.start_and_connect_sync()
        return cluster, client

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for cluster in clusters:
        if failed:
            _print_logs(cluster)
        cluster.stop_cluster_sync()


@pytest.fixture
def client4(start_cluster):
    _, client = start_cluster(4)
    return client


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def sshd(tmp_path):
    """A real OpenSSH server on 127.0.0.1 (tests/sshd.py), stopped by pid at teardown."""
    from sshd import SSHServer

    with SSHServer(tmp_path / "sshd") as server:
        yield server
