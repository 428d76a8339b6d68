"""A stock client's `@ipp.require(f)` / `@ipp.require(name=f)` on corral engines: ipyparallel's
`_require` runs on the engine and uncans `f` with ipyparallel's own `uncan`, which must
understand corral's stand-ins for canned objects (corral/engine/compat.py)."""

from __future__ import annotations

import pytest

ipp = pytest.importorskip("ipyparallel")


def triple(x):
    return 3 * x


triple.__module__ = "__main__"


def test_require_pushes_a_function_by_name(cluster):
    client, _, _ = cluster

    @ipp.require(triple)
    @ipp.interactive
    def uses_triple(a):
        return triple(a)  # noqa: F821 (defined on the engine by @require)

    @ipp.require(thrice=triple)
    @ipp.interactive
    def uses_thrice(a):
        return thrice(a)  # noqa: F821

    view = client.load_balanced_view()
    assert view.apply_sync(uses_triple, 5) == 15
    assert view.apply_sync(uses_thrice, 2) == 6
