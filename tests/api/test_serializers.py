"""``use_cloudpickle()`` / ``use_dill()`` / ``use_pickle()`` on views and the client: the
pickler and whose globals a function sent by value sees, here and on the engines."""

import pytest

from corral import serialize
from corral.serialize import pack_apply_message
from corral.serialize.switch import serializer

_a = "client"


def get_a():
    return _a


def engine_serializer():
    from corral.serialize.switch import serializer

    return serializer()


@pytest.fixture(autouse=True)
def _restore_default_serializer():
    yield
    serialize.use_pickle()  # process-wide, as in ipyparallel: never leak into other tests


def test_use_cloudpickle_prefers_client_values_until_use_pickle(client4):
    view = client4[:]
    view.push({"_a": "engine"}, block=True)
    assert view.apply_sync(get_a) == ["engine"] * 4, "default: the engine's names win"

    assert view.use_cloudpickle().get(timeout=30) == [None] * 4
    assert serializer() == "cloudpickle"
    assert view.apply_sync(engine_serializer) == ["cloudpickle"] * 4
    assert view.apply_sync(get_a) == ["client"] * 4, "cloudpickle: the client's values win"
    view.execute("del _a", block=True)
    assert view.apply_sync(get_a) == ["client"] * 4

    view.use_pickle()
    assert view.apply_sync(engine_serializer) == ["pickle"] * 4
    view.push({"_a": "engine again"}, block=True)
    assert view.apply_sync(get_a) == ["engine again"] * 4


def _notebook_function(source: str, name: str):
    """A function defined as in a notebook: in ``__main__``, with its globals. (dill, like
    pickle, sends functions of importable modules by reference.)"""
    import __main__

    exec(source, __main__.__dict__)
    return __main__.__dict__.pop(name)


def test_use_dill_pickles_with_dill_here_and_on_the_engines(client4):
    pytest.importorskip("dill")
    lview = client4.load_balanced_view()
    lview.use_dill().get(timeout=30)
    assert serializer() == "dill"
    engine_serializer = _notebook_function(
        "def engine_serializer():\n"
        "    from corral.serialize.switch import serializer\n"
        "    return serializer()\n", "engine_serializer")
    assert b"dill" in bytes(pack_apply_message(engine_serializer)[0])
    assert client4[:].apply_sync(engine_serializer) == ["dill"] * 4, "every engine switched"

    make_adder = _notebook_function(
        "def make_adder(n):\n    return lambda x: x + n\n", "make_adder")
    adder = lview.apply_sync(make_adder, 5)  # a closure made on the engine, sent back
    assert adder(1) == 6
    assert lview.map_sync(make_adder(10), range(3)) == [10, 11, 12]

    client4.use_pickle()
    assert serializer() == "pickle"
    assert client4[:].apply_sync(engine_serializer) == ["pickle"] * 4


def test_client_use_cloudpickle_switches_every_engine(client4):
    client4.use_cloudpickle()
    assert client4[:].apply_sync(engine_serializer) == ["cloudpickle"] * 4


def test_use_dill_without_dill_says_what_to_do(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_dill(name, *args, **kwargs):
        if name == "dill":
            raise ImportError("No module named 'dill'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dill)
    with pytest.raises(ImportError, match="pip install dill"):
        serialize.use_dill()
    assert serializer() == "pickle"


@pytest.mark.parametrize("kind", ["direct", "broadcast", "balanced"])
def test_a_switch_not_waited_for_still_comes_before_the_views_next_request(client4, kind):
    """ipyparallel's `test_use_cloudpickle` does not wait for `use_cloudpickle()`: the
    view's very next request must find every engine switched. A direct or broadcast view
    sends the switch on its own path (each engine keeps that path's order); a
    load-balanced view's tasks take another, so its switch returns once applied."""
    view = {
        "direct": lambda: client4[:],
        "broadcast": lambda: client4.broadcast_view(),
        "balanced": lambda: client4.load_balanced_view(),
    }[kind]()
    client4[:].push({"_a": "engine"}, block=True)
    for _ in range(5):  # a race would show within a few rounds
        view.use_cloudpickle()
        if kind == "balanced":
            got = client4[:].apply_sync(engine_serializer)
            assert got == ["cloudpickle"] * 4, "every engine switched on return"
            assert view.apply_sync(get_a) == "client"
        else:
            assert view.apply_sync(get_a) == ["client"] * 4
        view.use_pickle()
        if kind != "balanced":
            assert view.apply_sync(get_a) == ["engine"] * 4
