"""Functions sent by corral's client to stock ipyparallel engines run in the engines'
namespace, as with ipyparallel's own client: they see names pushed or defined there, and
``require``/``sync_imports`` bind names they then use."""

from __future__ import annotations

import corral
from corral import interactive


@interactive
def _read_a():
    return a  # noqa: F821 (pushed to the engines)


@interactive
def _set_counter(value):
    global counter
    counter = value


def test_a_function_reads_names_pushed_to_the_engine(stock):
    dv = stock.client[:]
    dv.push({"a": 5}, block=True)
    assert dv.apply_sync(_read_a) == [5, 5]
    lview = stock.client.load_balanced_view()
    assert lview.apply_sync(_read_a) == 5
    assert dv.map_sync(interactive(lambda x: x + a), [1, 2]) == [6, 7]  # noqa: F821
    bview = stock.client.broadcast_view(is_coalescing=True)
    assert bview.apply_sync(_read_a) == [5, 5]


def test_a_pushed_function_sees_later_names_and_global_writes_stay(stock):
    v = stock.client[-1]
    v.block = True
    v.execute("a = 1")
    v["f"] = _read_a
    v.execute("a = 11")
    v.execute("b = f()")
    assert v["b"] == 11
    v.apply_sync(_set_counter, 3)
    assert v["counter"] == 3


def test_closures_and_defaults_on_stock_engines(stock):
    dv = stock.client[:]
    dv.push({"a": 2}, block=True)
    k = 10

    def scaled(x, plus=_read_a):
        return x * k + plus()

    assert dv.apply_sync(interactive(scaled), 3) == [32, 32]


def test_require_binds_what_the_function_uses(stock):
    c = stock.client
    c[:].clear(block=True)

    @corral.require("re")
    @interactive
    def words(s):
        return re.findall(r"\w+", s)  # noqa: F821

    @corral.require(helper=len)
    @interactive
    def measured(s):
        return helper(s)  # noqa: F821

    lview = c.load_balanced_view()
    assert lview.apply_sync(words, "hello world") == ["hello", "world"]
    assert lview.apply_sync(measured, "four") == 4


def test_sync_imports_bind_names_the_functions_see(stock):
    view = stock.client[-1]
    view.clear(block=True)
    with view.sync_imports(quiet=True):
        import json  # noqa: F401

    @interactive
    def has_json():
        return "json" in globals()

    assert view.apply_sync(has_json)


def test_only_the_engine_namespace_is_seen_as_with_ipyparallel(stock):
    """A stock engine runs a notebook's function with its own namespace only, as it does
    for ipyparallel's client: an import made only in the notebook is not there (corral
    engines fill such gaps, see tests/api/test_engine_kinds.py)."""
    import pytest

    ns = {"__name__": "__main__"}
    exec("import json\ndef dumps_it(x):\n    return json.dumps(x)\n", ns)
    v = stock.client[-1]
    v.clear(block=True)
    with pytest.raises(corral.error.RemoteError, match="NameError"):
        v.apply_sync(ns["dumps_it"], [1])
    v.execute("import json", block=True)
    assert v.apply_sync(ns["dumps_it"], [1]) == "[1]"
    assert set(stock.client._engine_kinds._stock.values()) == {True}
