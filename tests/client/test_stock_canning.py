"""The canned form corral's client writes for stock engines (``stock_canning``), read back
by ipyparallel's own ``unpack_apply_message`` (what a stock engine runs) and by corral's:
functions of ``__main__`` get the namespace they are unpacked into as globals."""

from __future__ import annotations

import functools
import sys

import numpy
from ipyparallel.serialize import unpack_apply_message as stock_unpack

from corral import interactive, require
from corral.serialize import apply_wants_canning, pack_apply_message, unpack_apply_message


def _frames(*a, **kw):
    return [bytes(f) for f in pack_apply_message(*a, **kw, for_stock=True)]


@interactive
def _reads_engine_name():
    return engine_only  # noqa: F821 (a name only the engine has)


def test_a_main_function_runs_in_the_namespace_it_is_unpacked_into():
    for unpack in (stock_unpack, unpack_apply_message):
        ns = {"engine_only": 42}
        f, args, kwargs = unpack(_frames(_reads_engine_name, (), {}), ns)
        assert f.__globals__ is ns
        assert f() == 42


def test_defaults_closures_and_arguments_are_canned_where_stock_looks():
    k = 3

    @interactive
    def helper():
        return engine_only  # noqa: F821

    def scaled(x, extra=helper):
        return x * k + extra()

    scaled = interactive(scaled)  # keeps its closure over k
    big = numpy.arange(1000.0)
    for unpack in (stock_unpack, unpack_apply_message):
        ns = {"engine_only": 1}
        f, args, kwargs = unpack(
            _frames(scaled, (2, [helper, 5], {"g": helper}), {"h": helper, "arr": big}), ns)
        assert f(args[0]) == 7
        assert args[1][0]() == 1 and args[1][1] == 5
        assert args[2]["g"]() == 1
        assert kwargs["h"]() == 1
        assert (kwargs["arr"] == big).all()


def test_a_required_function_is_rebound_with_its_guard():
    @require(numpy_alias=numpy)
    @interactive
    def uses_required():
        return numpy_alias.__name__ + engine_only  # noqa: F821

    ns = sys.modules["__main__"].__dict__  # where the guard binds (an engine's user_ns)
    ns["engine_only"] = "!"
    try:
        f, _, _ = stock_unpack(_frames(uses_required, (), {}), ns)
        assert f.f.__globals__ is ns
        assert f() == "numpy!"  # the guard bound numpy_alias first
    finally:
        ns.pop("engine_only", None)
        ns.pop("numpy_alias", None)


def test_only_calls_with_namespace_functions_want_canning():
    assert apply_wants_canning(_reads_engine_name, (), {})
    assert apply_wants_canning(len, ([_reads_engine_name],), {})
    assert apply_wants_canning(len, (), {"f": _reads_engine_name})
    assert not apply_wants_canning(len, ([1, 2],), {"a": numpy.arange(3)})
    assert not apply_wants_canning(functools.partial(len), (), {})
