"""The two mixed pairings around corral's controller, each running the Data Publication flow:

a. a STOCK ``ipyparallel.Client`` + corral controller + corral engines;
b. the corral client + corral controller + STOCK ``ipengine``s.

Functions for the stock client are ``@ipp.interactive`` (module ``__main__``), so engines do
not import this module; the corral client sends them by value (cloudpickle, see
``tests/conftest.py``), which stock engines read with plain pickle. Large array arguments and
``Reference``s reach stock engines in ipyparallel's canned form (``corral.serialize.canned_writer``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import corral

ipp = pytest.importorskip("ipyparallel")

import remote_functions as rf  # noqa: E402
from cluster_processes import (  # noqa: E402
    corral_engine_argv,
    start_corral_controller,
    stock_engine_argv,
    wait_for,
)

N_ENGINES = 2


def _corral_controller_cluster(tmp_path, procs, engine_argv, connect):
    """corral's controller, N_ENGINES engines started by ``engine_argv(profile_dir)``, and a
    client from ``connect(profile_dir)`` once they are registered; closed at teardown."""
    profile_dir = tmp_path / "profile"
    profile_dir.mkdir()
    start_corral_controller(procs, profile_dir)
    for i in range(N_ENGINES):
        procs.start(f"engine{i}", engine_argv(profile_dir))
    client = connect(profile_dir)
    try:
        client.wait_for_engines(N_ENGINES, timeout=60)
        yield client
    finally:
        client.close()


@pytest.fixture
def stock_client_corral_engines(tmp_path, procs):
    """(a): a stock ipyparallel.Client on corral's controller with corral engines."""
    yield from _corral_controller_cluster(
        tmp_path, procs, corral_engine_argv, lambda d: ipp.Client(profile_dir=str(d)))


@pytest.fixture
def corral_client_stock_engines(tmp_path, procs):
    """(b): the corral client on corral's controller with stock ipengines."""
    yield from _corral_controller_cluster(
        tmp_path, procs, stock_engine_argv, lambda d: corral.Client(profile_dir=d, timeout=30))


def _data_publication_flow(c, remote_errors) -> None:
    """The flow both pairings run; ``c`` is a stock or a corral client."""
    assert sorted(c.ids) == list(range(N_ENGINES))
    dv = c[:]

    ar = dv.apply_async(rf.publish_once)
    assert ar.get(timeout=30) == ["done"] * N_ENGINES
    wait_for(lambda: ar.data == [{"a": "hi"}] * N_ENGINES, 10, "published data")

    ar = dv.apply_async(rf.publish_loop)
    ar.get(timeout=30)
    wait_for(lambda: all(d.get("i") == 4 for d in ar.data), 10, "last publication")

    ar = dv.apply_async(rf.say_hello)
    assert ar.get(timeout=30) == [1] * N_ENGINES
    wait_for(lambda: all("hello from an engine" in s for s in ar.stdout), 10, "stdout")

    ar = dv.apply_async(rf.fail)
    with pytest.raises(remote_errors) as info:
        ar.get(timeout=30)
    assert "boom" in str(info.value)

    # A numpy result large enough to travel as its own buffer frame.
    arrays = dv.apply_async(rf.arange, 100_000).get(timeout=30)
    assert len(arrays) == N_ENGINES
    for a in arrays:
        np.testing.assert_array_equal(a, np.arange(100_000, dtype="float64"))

    single = c[0].apply_async(rf.publish_once)
    assert single.get(timeout=30) == "done"
    wait_for(lambda: single.data == {"a": "hi"}, 10, "published data, single engine")

    lview = c.load_balanced_view()
    assert lview.apply_sync(rf.double, 21) == 42
    ar = lview.apply_async(rf.publish_once)
    assert ar.get(timeout=30) == "done"
    wait_for(lambda: ar.data == {"a": "hi"}, 10, "published data, load-balanced")


def test_stock_client_corral_controller_corral_engines(stock_client_corral_engines):
    c = stock_client_corral_engines
    _data_publication_flow(c, (ipp.error.RemoteError, ipp.error.CompositeError))
    # The stock client's own helpers that go through the hub.
    status = c.queue_status()
    assert status["unassigned"] == 0
    for eid in c.ids:
        assert status[eid]["completed"] >= 5
    assert c.load_balanced_view().map_sync(rf.double, range(6)) == [0, 2, 4, 6, 8, 10]
    assert c.broadcast_view().apply_sync(rf.double, 5) == [10] * N_ENGINES
    rf.check_coalescing_broadcast(c, N_ENGINES)


def test_corral_client_corral_controller_stock_engines(corral_client_stock_engines):
    c = corral_client_stock_engines
    _data_publication_flow(c, (corral.error.RemoteError, corral.error.CompositeError))
    assert c.broadcast_view().apply_sync(rf.double, 5) == [10] * N_ENGINES
    # Arguments big enough for frames of their own, and names resolved on the engine.
    big = np.arange(100_000, dtype="float64")
    assert c[:].apply_sync(rf.double, big)[0][-1] == 2 * big[-1]
    c[:].push({"big": big, "k": 20}, block=True)
    np.testing.assert_array_equal(c[0].pull("big", block=True), big)
    assert c[:].apply_sync(rf.double, corral.Reference("k")) == [40] * N_ENGINES
    parts = c[:].scatter("part", big, block=True) or c[:].gather("part", block=True)
    np.testing.assert_array_equal(parts, big)
