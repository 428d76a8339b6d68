"""Results and published data of tasks read through the controller (issues 8 and 10):
``get_result``/``AsyncHubResult`` from another client, live while the task runs and after
it ended, ``data_history``, ``data_meta``, ``db_query`` with ``keys``, ``resubmit``, and the
``Client.results``/``Client.metadata`` mappings."""

from __future__ import annotations

import time
from datetime import datetime

import numpy as np
import pytest

import corral
from corral.error import RemoteError
from corral.serialize import deserialize_object


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")



def caught_up(ar):
    """Waits until the controller's store holds every update this client received: the
    store is filled from copies that reach the hub a little after the relayed messages
    (and after the reply, which takes another path), so right after ``get()`` it can be a
    few milliseconds behind."""
    def done():
        metas = ar.data_meta
        metas = metas if isinstance(metas, list) else [metas]
        return all((m["seq"] or 0) >= m["received_updates"] for m in metas)

    wait_for(done, 10, "the controller's store to hold every update")

def publish_until(flag_path, limit=60.0):
    """Publishes an increasing ``i`` (and a constant array once) until ``flag_path``
    exists; returns the last ``i``."""
    import os
    import time

    import numpy as np

    from corral.datapub import publish_data

    publish_data(dict(a=np.arange(500.0), i=0))
    i = 0
    t0 = time.monotonic()
    while not os.path.exists(flag_path) and time.monotonic() - t0 < limit:
        time.sleep(0.1)
        i += 1
        publish_data(dict(i=i))
    return i


def publish_five():
    from corral.datapub import publish_data

    print("five updates")
    publish_data(dict(a="first", i=0))
    for i in range(1, 5):
        publish_data(dict(i=i))
    return "done"


def second_client(cluster):
    return corral.Client(url_file=str(cluster.client_file), timeout=10)


def test_a_second_client_reads_a_running_tasks_data_and_sees_it_change(start_cluster,
                                                                       tmp_path):
    cluster, c = start_cluster(2)
    flag = tmp_path / "stop"
    ar = c[0].apply_async(publish_until, str(flag))
    msg_id = ar.msg_ids[0]
    other = second_client(cluster)
    try:
        hub_ar = other.get_result(msg_id)
        assert isinstance(hub_ar, corral.AsyncHubResult)
        first = wait_for(lambda: hub_ar.data.get("i"), 30, "published data through the hub")
        np.testing.assert_array_equal(hub_ar.data["a"], np.arange(500.0))
        later = wait_for(lambda: (hub_ar.data.get("i") or 0) > first and hub_ar.data["i"], 30,
                         "the data to change")
        assert later > first
        assert not hub_ar.ready()
        meta = hub_ar.data_meta
        assert meta["engine_id"] == 0 and meta["alive"] is True
        assert meta["seq"] >= 2 and meta["age"] is not None and meta["age"] < 30
        assert meta["received_updates"] >= 1, "live IOPub reaches the follower"

        flag.write_text("stop")
        last = hub_ar.get(timeout=30)
        assert last == ar.get(timeout=30)
        wait_for(lambda: hub_ar.data["i"] == last, 10, f"final data, have {hub_ar.data}")
        assert ar.data["i"] == last
        assert hub_ar.metadata["engine_id"] == 0
        assert hub_ar.metadata["completed"] is not None
    finally:
        other.close()


def test_a_client_started_after_the_task_ended_reads_final_data_and_history(start_cluster):
    cluster, c = start_cluster(2)
    ar = c[:].apply_async(publish_five)
    assert ar.get(timeout=30) == ["done", "done"]
    caught_up(ar)
    other = second_client(cluster)
    try:
        one = other.get_result(ar.msg_ids[1], block=True)
        assert one.get(timeout=5) == "done"
        assert one.data == {"a": "first", "i": 4}
        assert "five updates" in one.stdout
        assert one.metadata["engine_id"] == 1

        # The engine may conflate updates it has not sent yet (latest wins), so the
        # controller holds between 2 and 5 of them, the first and the last always.
        history = one.data_history
        seqs = [h["seq"] for h in history]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 2
        assert history[0]["data"] == {"a": "first", "i": 0}
        assert history[-1]["data"] == {"i": 4}
        assert all(isinstance(h["published"], datetime) for h in history)

        meta = one.data_meta
        assert (meta["seq"], meta["engine_id"], meta["alive"]) == (len(seqs), 1, True)
        assert meta["published_updates"] == len(seqs)

        both = other.get_result(ar.msg_ids)
        assert both.get(timeout=30) == ["done", "done"]
        assert both.data == [{"a": "first", "i": 4}] * 2
    finally:
        other.close()
    with pytest.raises(RemoteError) as unknown:
        c.get_result("no-such-msg-id").get(timeout=5)
    assert unknown.value.ename == "KeyError"


def test_data_meta_on_own_results_and_after_an_engine_died(start_cluster):
    cluster, c = start_cluster(2)
    ar = c[:].apply_async(publish_five)
    ar.get(timeout=30)
    caught_up(ar)
    metas = ar.data_meta
    assert [m["engine_id"] for m in metas] == [0, 1]
    for m in metas:
        # What the controller recorded reached this client too (the engine may have
        # conflated some before sending).
        assert 2 <= m["seq"] == m["published_updates"] == m["received_updates"] <= 5
        assert 0 <= m["conflated_updates"] < m["received_updates"]
        assert m["alive"] is True and m["died"] is None
    c.shutdown(targets=[1], block=True)
    dead = wait_for(lambda: ar.data_meta[1]["alive"] is False and ar.data_meta[1], 30,
                    "the engine's death")
    assert isinstance(dead["died"], datetime) and dead["died_ago"] >= 0
    assert ar.data == [{"a": "first", "i": 4}] * 2, "data outlives its engine"


def test_db_query_with_keys(start_cluster):
    cluster, c = start_cluster(2)
    ar = c[:].apply_async(publish_five)
    ar.get(timeout=30)
    caught_up(ar)
    quiet = c[0].apply_async(np.arange, 3000)
    quiet.get(timeout=30)
    ids = ar.msg_ids + quiet.msg_ids
    records = c.db_query({"msg_id": {"$in": ids}},
                         keys=["completed", "data", "result_buffers", "engine_uuid"])
    by_id = {r["msg_id"]: r for r in records}
    assert sorted(by_id) == sorted(ids)
    for m in ar.msg_ids:
        assert by_id[m]["data"] == {"a": "first", "i": 4}
        assert isinstance(by_id[m]["completed"], datetime)
    assert by_id[quiet.msg_ids[0]]["data"] == {}
    value = deserialize_object(by_id[quiet.msg_ids[0]]["result_buffers"])[0]
    np.testing.assert_array_equal(value, np.arange(3000))
    plain = c.db_query({"msg_id": ar.msg_ids[0]}, keys="completed")
    assert set(plain[0]) == {"msg_id", "completed"}
    full = c.db_query({"msg_id": ar.msg_ids[0]})
    assert "data" not in full[0], "only when named, as ipyparallel's records have none"
    with pytest.raises(RemoteError, match="unsupported query operator"):
        c.db_query({"msg_id": {"$regex": "x"}})
    # Labels by glob, as ipyparallel's task-label example queries them.
    for label in ["map_01", "map_02", "other"]:
        c[0].set_flags(label=label).apply_sync(np.arange, 1)
    labelled = c.db_query({"label": {"$glob": "map_*"}}, keys=["label"])
    assert sorted(r["label"] for r in labelled) == ["map_01", "map_02"]


def test_resubmit_runs_the_task_again(start_cluster):
    cluster, c = start_cluster(2)
    view = c.load_balanced_view()
    ar = view.apply_async(publish_five)
    assert ar.get(timeout=30) == "done"
    again = c.resubmit(ar.msg_ids)
    assert isinstance(again, corral.AsyncHubResult)
    assert again.msg_ids != ar.msg_ids
    # As ipyparallel's: a list of results, one per resubmitted msg_id.
    assert again.get(timeout=30) == ["done"]
    wait_for(lambda: again.data == [{"a": "first", "i": 4}], 10, "the copy's data")
    assert c.resubmit(ar, block=True).get(timeout=5) == ["done"]


def test_results_and_metadata_mappings(start_cluster):
    cluster, c = start_cluster(2)
    ar = c[0].apply_async(lambda: 7)
    assert c.wait(ar, timeout=30)  # done, but no AsyncResult took it yet
    msg_id = c.history[-1]
    assert c.results[msg_id] == 7
    assert msg_id in c.results and msg_id in c.metadata and "nope" not in c.results
    assert msg_id in list(c.results)
    assert c.metadata[msg_id]["engine_id"] == 0
    assert c.metadata[msg_id]["status"] == "ok"
    with pytest.raises(KeyError):
        c.results["nope"]
    assert ar.get(timeout=5) == 7  # a view's result owns its task's result (ipyparallel's)
    assert msg_id not in c.results and msg_id not in c.metadata
    assert ar.metadata["engine_id"] == 0
    other = second_client(cluster)
    try:
        kept = other.get_result(msg_id, owner=False)
        assert kept.get(timeout=30) == 7
        assert other.results[msg_id] == 7
        assert other.metadata[msg_id]["engine_id"] == 0
        owned = other.get_result(c.history[-1])  # owner=True, as ipyparallel
        assert owned.get(timeout=30) == 7
        assert msg_id not in other.results, "the owner took it"
        assert owned.metadata["status"] == "ok"
    finally:
        other.close()
