"""Client intake under a flood of publications (fake controller/engine, no stock peers)."""

from __future__ import annotations

import time

import corral
from fake_controller import FakeController


def test_flood_of_publications_is_conflated_and_final(tmp_path):
    n = 50_000
    with FakeController(tmp_path, n):
        with corral.Client(profile_dir=tmp_path, timeout=10) as c:
            assert c.ids == [0]
            ar = c[0].apply_async(max, 1, 2)
            reads = 0
            while not ar.ready():
                ar.data
                reads += 1
                assert ar.elapsed < 60
            assert ar.get(timeout=10) == n
            assert ar.data == {"i": n - 1}
            assert ar.metadata["data_messages"] == n


def test_unread_publications_cost_one_update(tmp_path):
    n = 20_000
    with FakeController(tmp_path, n):
        with corral.Client(profile_dir=tmp_path, timeout=10) as c:
            ar = c[0].apply_async(max, 1, 2)
            assert ar.get(timeout=60) == n
            # Nobody read while it ran: everything collapsed into one pending update.
            assert len(c._core.take_data(ar.msg_ids)[0]) == 1
