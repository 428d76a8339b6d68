"""A stock ipyparallel 9.2 client's record queries against corral's controller, now that
the controller keeps published data (docs/PROTOCOL.md §12): ``db_query`` and
``get_result`` answer as before, and a stock client that names corral's ``data`` key still
relinks its buffers correctly."""

from __future__ import annotations

from pathlib import Path

import time
import pytest

ipp = pytest.importorskip("ipyparallel")

import remote_functions as rf  # noqa: E402
from cluster_processes import (  # noqa: E402
    Processes,
    start_corral_controller,
    stock_engine_argv,
)

#: The keys of a record as ipyparallel's DictDB has them (and returns for ``keys=None``).
STOCK_KEYS = {
    "msg_id", "header", "metadata", "content", "submitted", "client_uuid", "engine_uuid",
    "started", "completed", "resubmitted", "received", "result_header", "result_metadata",
    "result_content", "queue", "execute_input", "execute_result", "error", "stdout",
    "stderr", "label",
}


@pytest.fixture
def stock_client(tmp_path: Path, request):
    procs = Processes(tmp_path)
    clients = []
    failed_before = request.session.testsfailed
    try:
        start_corral_controller(procs, tmp_path)
        procs.start("engine0", stock_engine_argv(tmp_path))
        client = ipp.Client(profile_dir=str(tmp_path))
        clients.append(client)
        client.wait_for_engines(1, timeout=60)

        def another():
            c = ipp.Client(profile_dir=str(tmp_path))
            clients.append(c)
            return c

        yield client, another
    finally:
        for c in clients:
            c.close()
        procs.stop_all()
        if request.session.testsfailed > failed_before:
            print(procs.report())


def test_stock_db_query_and_get_result_with_published_data(stock_client):
    c, another = stock_client
    ar = c[0].apply_async(rf.publish_loop)
    assert ar.get(timeout=30) == "done"
    msg_id = ar.msg_id

    (rec,) = c.db_query({"msg_id": msg_id})
    assert set(rec) == STOCK_KEYS, "no corral key unless asked for"

    keys = ["msg_id", "buffers", "result_buffers", "completed"]
    (rec,) = c.db_query({"msg_id": msg_id}, keys=keys)
    assert set(rec) == set(keys)
    assert ipp.serialize.deserialize_object(rec["result_buffers"])[0] == "done"
    assert len(rec["buffers"]) >= 2, "the apply request's function and argument frames"

    # Naming corral's `data` key: the data frames come after every other buffer, so the
    # stock client's relinking of buffers and result_buffers is unchanged.
    # (The controller's copy of the data reaches its store a few ms after the messages it
    # relays: ask again until it is there.)
    deadline = time.monotonic() + 10
    while True:
        (rec,) = c.db_query({"msg_id": msg_id}, keys=keys + ["data"])
        if rec["data"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ipp.serialize.deserialize_object(rec["result_buffers"])[0] == "done"
    (entry,) = rec["data"]
    assert entry["seq"] >= 1 and entry["engine_id"] == 0 and entry["engine_alive"]

    other = another()
    hub_ar = other.get_result(msg_id)
    assert hub_ar.get(timeout=30) == "done"
    assert other.result_status([msg_id])["completed"] == [msg_id]
