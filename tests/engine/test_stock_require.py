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


def test_use_cloudpickle_lets_the_clients_values_win(cluster):
    """ipyparallel's test_use_cloudpickle: with a stock client's `use_cloudpickle()`, a
    function's globals are the client's, even where the engine has the name; after
    `use_pickle()` the engine's namespace counts again."""
    import sys

    client, _, _ = cluster
    view = client[:]
    view["_a"] = "engine"

    @ipp.interactive
    def get_a():
        return _a  # noqa: F821

    assert view.apply_sync(get_a) == ["engine"] * len(view)
    main = sys.modules["__main__"]
    view.use_cloudpickle().get(timeout=20)
    try:
        main._a = "client"
        assert view.apply_sync(get_a) == ["client"] * len(view)
        view.execute("del _a", block=True)
        assert view.apply_sync(get_a) == ["client"] * len(view)
    finally:
        view.use_pickle().get(timeout=20)
        del main._a
    with pytest.raises(ipp.error.CompositeError):
        view.apply_sync(get_a)
