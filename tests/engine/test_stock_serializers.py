"""A STOCK client's ``view.use_cloudpickle()`` / ``use_pickle()`` switch corral engines the
way they switch ipyparallel's (ipyparallel's own ``test_use_cloudpickle``, which failed with
corral engines: they ran every function sent by value in their namespace, engine names
first, whatever the client had switched to)."""

from __future__ import annotations

import sys

import pytest

ipp = pytest.importorskip("ipyparallel")


def test_stock_use_cloudpickle_then_use_pickle(cluster):
    client, _, _ = cluster
    view = client[:]
    main = sys.modules["__main__"]
    view["_a"] = "engine"

    @ipp.interactive  # globals: this process's __main__, as in a notebook
    def get_a():
        return _a  # noqa: F821

    try:
        assert view.apply_sync(get_a) == ["engine"] * 2
        view.use_cloudpickle()
        main._a = "client"
        assert view.apply_sync(get_a) == ["client"] * 2, "cloudpickle: client values win"
        view.execute("del _a", block=True)
        assert view.apply_sync(get_a) == ["client"] * 2
        view.use_pickle()
        with pytest.raises(ipp.error.RemoteError) as info:
            view.apply_sync(get_a)
        assert "NameError" in str(info.value), "back to the engine's namespace"
    finally:
        ipp.serialize.use_pickle()
        if hasattr(main, "_a"):
            del main._a
