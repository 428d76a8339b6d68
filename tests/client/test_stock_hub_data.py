"""corral's ``get_result``, ``db_query``, ``data_meta`` and ``data_history`` against a
stock ipyparallel controller, which keeps no published data: results still come from its
records, data only from what arrives live, and ``data_history`` says why it cannot work."""

from __future__ import annotations

import sys

import cloudpickle
import pytest

import corral

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def publish_twice():
    from ipyparallel.datapub import publish_data

    publish_data(dict(a=1, i=0))
    publish_data(dict(i=1))
    return "done"


def test_hub_results_and_data_on_a_stock_controller(stock):
    c = stock.client
    ar = c[0].apply_async(publish_twice)
    assert ar.get(timeout=30) == "done"
    assert ar.data == {"a": 1, "i": 1}
    meta = ar.data_meta
    assert meta["seq"] is None, "a stock controller counts nothing"
    assert meta["received_updates"] == 2 and meta["engine_id"] == 0 and meta["alive"]
    with pytest.raises(RuntimeError, match="keeps no published data"):
        ar.data_history

    url_file = stock.profile_dir / "security" / "ipcontroller-client.json"
    other = corral.Client(url_file=str(url_file), timeout=10)
    try:
        hub_ar = other.get_result(ar.msg_ids[0], block=True)
        assert hub_ar.get(timeout=5) == "done"
        assert hub_ar.data == {}, "nothing kept, nothing live after the end"
        assert hub_ar.metadata["engine_id"] == 0
        (rec,) = other.db_query({"msg_id": ar.msg_ids[0]}, keys=["completed", "result_buffers"])
        assert rec["completed"] is not None and rec["result_buffers"]
    finally:
        other.close()
