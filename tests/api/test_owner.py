"""A view's ``AsyncResult`` owns its tasks' results, as ipyparallel's: once it has them,
``Client.results`` and ``Client.metadata`` no longer list them, and it keeps answering."""

from __future__ import annotations

import corral


def test_a_views_result_owns_its_results(start_cluster):
    cluster, c = start_cluster(2)
    dv, lview = c[:], c.load_balanced_view()
    for ar in (dv.apply_async(lambda: 1), lview.apply_async(lambda: 2),
               dv.execute("x = 3"), dv.scatter("y", [1, 2])):
        ar.get(timeout=30)
        ar.wait_for_output()
        for msg_id in ar.msg_ids:
            assert msg_id not in c.results and msg_id not in c.metadata
            assert msg_id not in list(c.results) and msg_id not in list(c.metadata)
    ar = dv.apply_async(lambda: print("hi") or 4)
    assert ar.get(timeout=30) == [4, 4]
    assert ar.stdout == ["hi\n", "hi\n"] and ar.progress == 2
    assert [md["status"] for md in ar.metadata] == ["ok", "ok"]
    assert c.get_result(ar.msg_ids[0]).get(timeout=5) == 4, "still this client's"

    # Not an owner: split parts, get_result(owner=False), results nobody took.
    ar = dv.apply_async(lambda: 5)
    assert c.wait(ar, timeout=30)
    assert all(c.results[m] == 5 for m in ar.msg_ids)
    assert [part.get(timeout=5) for part in ar.split()] == [5, 5]
    assert all(m in c.results for m in ar.msg_ids)
    assert c.get_result(ar.msg_ids, owner=False).get(timeout=5) == [5, 5]
    assert all(m in c.metadata for m in ar.msg_ids)
    c.results[ar.msg_ids[0]] = "mine"  # written back by hand: listed again
    assert c.results[ar.msg_ids[0]] == "mine"

    c.purge_everything()
    assert len(c.results) == 0 and not c._owned
    assert isinstance(ar, corral.AsyncResult)
