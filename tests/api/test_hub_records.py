"""The controller's records through corral's client: hub_history, result_status (local and
from the controller, for another client's tasks), and purging results."""

import numpy as np
import pytest

import corral
from corral.error import RemoteError


def fail():
    raise ValueError("recorded failure")


def test_result_status_local_and_from_another_client(start_cluster):
    cluster, c = start_cluster(2)
    ok = c[0].apply_async(np.arange, 5000)
    bad = c[1].apply_async(fail)
    ok.get(timeout=30)
    with pytest.raises(RemoteError):
        bad.get(timeout=30)
    assert set(ok.msg_ids + bad.msg_ids) <= set(c.hub_history())

    status = c.result_status([ok, bad])
    assert sorted(status["completed"]) == sorted(ok.msg_ids + bad.msg_ids)
    assert status["pending"] == []
    local = c.result_status(ok, status_only=False)
    np.testing.assert_array_equal(local[ok.msg_ids[0]], np.arange(5000))

    other = corral.Client(url_file=str(cluster.client_file), timeout=10)
    try:
        assert other.result_status(ok.msg_ids)["completed"] == ok.msg_ids
        both = other.result_status(ok.msg_ids + bad.msg_ids, status_only=False)
        np.testing.assert_array_equal(both[ok.msg_ids[0]], np.arange(5000))
        assert both[bad.msg_ids[0]].ename == "ValueError"
        with pytest.raises(RemoteError, match="recorded failure"):
            other.result_status(bad.msg_ids, status_only=False)
        with pytest.raises(RemoteError) as unknown:
            other.result_status(["no-such-msg-id"])
        assert unknown.value.ename == "KeyError"
    finally:
        other.close()


def test_purge_local_hub_and_everything(client4):
    c = client4
    running = c[0].apply_async(__import__("time").sleep, 2)
    second = c[1]
    done = second.apply_async(lambda: 1)
    done.get(timeout=30)
    with pytest.raises(RuntimeError, match="outstanding"):
        c.purge_local_results(running)
    with pytest.raises(ValueError):
        c.purge_results()
    c.purge_local_results(done)
    assert c._core.task(done.msg_ids[0]) is None
    assert second.outstanding == set(), "a forgotten task is not pending"
    assert second.wait(timeout=1) and c.wait([done], timeout=1)
    c.purge_hub_results(targets=[1])
    assert done.msg_ids[0] not in c.hub_history()
    running.get(timeout=30)
    c.purge_everything()
    assert c.history == [] and c.hub_history() == []
