"""``get_result`` of another client's task whose result this client already holds (fetched
by a ``get_result(..., owner=False)``) is a plain ``AsyncResult``, as in ipyparallel; with
``owner`` (the default) it then takes the result out of ``Client.results``/``metadata``."""

from __future__ import annotations

import corral
from corral import AsyncHubResult


def test_a_held_result_comes_back_as_a_plain_async_result(start_cluster):
    cluster, c = start_cluster(1)
    other = corral.Client(url_file=str(cluster.client_file), timeout=10)
    try:
        ar = c[0].apply_async(lambda: 6 * 7)
        ex = c[0].execute("x = 5\nx", silent=False)
        msg_id, ex_id = ar.msg_ids[0], ex.msg_ids[0]
        ar.get(timeout=30), ex.get(timeout=30)  # recorded by the controller by now
        fetched = other.get_result(msg_id, owner=False)
        assert isinstance(fetched, AsyncHubResult)
        assert fetched.get(timeout=30) == 42
        held = other.get_result(msg_id, block=True)
        assert not isinstance(held, AsyncHubResult)
        assert held.ready() and held.get(timeout=5) == 42
        assert held.metadata["status"] == "ok" and held.metadata["engine_id"] == 0
        assert held.progress == 1
        assert msg_id not in other.results and msg_id not in other.metadata, "owned now"
        assert fetched.get(timeout=5) == 42  # the first one still has its value
        assert other.get_result([held]).msg_ids == [msg_id]

        ex_fetched = other.get_result(ex_id, owner=False)
        assert ex_fetched.get(timeout=30).execute_result["data"]["text/plain"] == "5"
        ex_held = other.get_result(ex_id, owner=False)
        assert not isinstance(ex_held, AsyncHubResult)
        assert ex_held.get(timeout=5) == ex_fetched.get()
        assert ex_id in other.results, "not the owner: the client keeps it"
    finally:
        other.close()
