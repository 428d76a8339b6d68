"""ipyparallel's client internals that third-party code reads: ``_ids``,
``_build_targets`` (which direct views resolve their targets with) and
``_outstanding_dict``."""

from __future__ import annotations

import time

import pytest

from corral import error


def test_build_targets_ids_and_outstanding_per_engine(start_cluster):
    _, c = start_cluster(3)
    ids = c.ids
    assert c._ids == ids and c._ids is not c._ids
    uuids = [c._engines[i].encode() for i in ids]
    assert c._build_targets(None) == (uuids, ids)
    assert c._build_targets("all") == (uuids, ids)
    assert c._build_targets(-1) == (uuids[-1:], ids[-1:])
    assert c._build_targets(slice(None, None, 2)) == (uuids[::2], ids[::2])
    assert c._build_targets(range(2)) == (uuids[:2], ids[:2])
    with pytest.raises(TypeError):
        c._build_targets("some")
    with pytest.raises(IndexError):
        c._build_targets(99)

    ar = c[ids[-1]].apply_async(time.sleep, 1)
    uuid = c._engines[ids[-1]]
    assert ar.msg_ids[0] in c._outstanding_dict[uuid]
    ar.get(timeout=30)
    assert ar.msg_ids[0] not in c._outstanding_dict[uuid]


def test_direct_views_resolve_targets_through_build_targets(start_cluster):
    """A wrapped ``_build_targets`` (as ipyparallel's own tests install) decides where a
    direct view's requests go."""
    _, c = start_cluster(2)
    build = c._build_targets
    c._build_targets = lambda targets: tuple(part[:1] for part in build(targets))
    try:
        for targets in ("all", None, c.ids):
            assert c.direct_view(targets=targets).apply_sync(lambda: 5) == [5]
    finally:
        del c._build_targets
    assert c[:].apply_sync(lambda: 5) == [5, 5]
    with pytest.raises(error.NoEnginesRegistered):
        c.direct_view(targets=[]).apply_sync(lambda: 5)
