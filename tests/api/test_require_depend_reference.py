"""ipyparallel's function-level helpers on an all-corral cluster: @require, @depend,
@interactive and Reference."""

import pytest

import corral
from corral.error import CompositeError, RemoteError


def test_require_imports_on_the_engine_and_binds_objects(client4):
    dv = client4[:]

    def helper(x):
        return x + 1

    @corral.require("json", helper)
    def use_them():
        return json.dumps({"v": helper(1)})  # noqa: F821 - bound on the engine by require

    assert dv.apply_sync(use_them) == ['{"v": 2}'] * 4
    assert dv.apply_sync(lambda: "json" in globals()) == [True] * 4


def test_unmet_requirements(client4):
    @corral.require("no_such_module_anywhere")
    def never():
        return "ran"

    with pytest.raises(CompositeError) as info:
        client4[:].apply_sync(never)
    assert {e[0] for e in info.value.elist} == {"UnmetDependency"}
    # The task scheduler tries every target engine, then gives up.
    with pytest.raises(RemoteError) as one:
        client4.load_balanced_view(targets=[1, 2]).apply_sync(never)
    assert one.value.ename == "ImpossibleDependency"
    # Without targets it waits for an engine that can (as ipyparallel), up to its timeout.
    with pytest.raises(RemoteError) as late:
        client4.load_balanced_view(timeout=1).apply_sync(never)
    assert late.value.ename == "TaskTimeout"


def test_depend_runs_where_the_check_passes(client4):
    c = client4
    c[:].scatter("rank", c.ids, flatten=True, block=True)

    def on_rank(r):
        return rank == r  # noqa: F821 - the engine's name

    def whoami():
        return rank  # noqa: F821

    lview = c.load_balanced_view()
    for r in (1, 3):
        assert lview.apply_sync(corral.depend(on_rank, r)(whoami)) == r


def test_reference_and_interactive(client4):
    dv = client4[:]
    dv.push({"x": 21}, block=True)
    assert dv.apply_sync(lambda v, w=0: v * 2 + w, corral.Reference("x"),
                         w=corral.Reference("x")) == [63] * 4

    @corral.interactive
    def read_x():
        return x  # noqa: F821

    assert read_x.__module__ == "__main__"
    assert dv.apply_sync(read_x) == [21] * 4
    with pytest.raises(TypeError):
        corral.Reference(3)


def test_a_reference_as_the_function_calls_the_engines_function(start_cluster):
    _, c = start_cluster(2)
    c[:]["foo"] = 5
    c[:]["bar"] = lambda: 2 * foo  # noqa: F821 (foo is the engine's)
    assert c[:].apply_sync(corral.Reference("bar")) == [10, 10]
