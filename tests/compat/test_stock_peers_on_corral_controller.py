"""Stock ipyparallel 9.2 engines and client against corral's Rust controller.

Functions sent to engines are `@ipp.interactive` (module `__main__`), so engines do
not need to import this test module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ipp = pytest.importorskip("ipyparallel")

import remote_functions as rf  # noqa: E402
from cluster_processes import (  # noqa: E402
    Processes,
    start_corral_controller,
    stock_engine_argv,
    wait_for,
)

N_ENGINES = 2


@pytest.fixture
def cluster(tmp_path: Path, request):
    procs = Processes(tmp_path)
    client = None
    failed_before = request.session.testsfailed
    try:
        start_corral_controller(procs, tmp_path)
        for i in range(N_ENGINES):
            procs.start(f"engine{i}", stock_engine_argv(tmp_path))
        client = ipp.Client(profile_dir=str(tmp_path))
        client.wait_for_engines(N_ENGINES, timeout=60)
        yield client, procs, tmp_path / "security" / "ipcontroller-client.json"
    finally:
        if client is not None:
            client.close()
        procs.stop_all()
        if request.session.testsfailed > failed_before:
            print(procs.report())


def test_stock_engines_and_client_on_corral_controller(cluster):
    c, procs, client_file = cluster
    assert sorted(c.ids) == list(range(N_ENGINES))
    dv = c[:]
    dv.block = False

    ar = dv.apply_async(rf.publish_once)
    assert ar.get(timeout=30) == ["done"] * N_ENGINES
    wait_for(lambda: ar.data == [{"a": "hi"}] * N_ENGINES, 10, "published data")

    ar = dv.apply_async(rf.publish_loop)
    ar.get(timeout=30)
    wait_for(lambda: all(d.get("i") == 4 for d in ar.data), 10, f"last publication, have {ar.data}")

    ar = dv.apply_async(rf.say_hello)
    assert ar.get(timeout=30) == [1] * N_ENGINES
    wait_for(lambda: all("hello from an engine" in s for s in ar.stdout), 10, "stdout")

    ar = dv.apply_async(rf.fail)
    with pytest.raises((ipp.error.RemoteError, ipp.error.CompositeError)) as info:
        ar.get(timeout=30)
    assert "boom" in str(info.value)

    lview = c.load_balanced_view()
    assert lview.apply_sync(rf.double, 21) == 42
    assert sorted(lview.map_sync(rf.inc, range(6))) == [1, 2, 3, 4, 5, 6]

    bview = c.broadcast_view()
    assert bview.apply_sync(rf.double, 5) == [10] * N_ENGINES
    rf.check_coalescing_broadcast(c, N_ENGINES)

    status = c.queue_status()
    for eid in c.ids:
        assert set(status[eid]) == {"queue", "completed", "tasks"}
        assert status[eid]["completed"] >= 4
    assert status["unassigned"] == 0

    # The controller stops cleanly on SIGTERM and removes its files.
    c.close()
    assert procs.stop("controller") == 0
    assert not client_file.exists()
