"""corral engines say what they are (``kernel_info``), and keep receiving functions in
corral's own form: a function sent by value brings the names it uses along, filling what
the engine's namespace lacks (stock engines get ipyparallel's canned form instead, see
tests/client/test_stock_namespace.py)."""

from __future__ import annotations


def _main_function():
    """A function as a notebook defines it: module ``__main__``, globals holding an import
    the engines never made."""
    ns = {"__name__": "__main__"}
    exec("import json\ndef dumps_it(x):\n    return json.dumps(x)\n", ns)
    return ns["dumps_it"]


def test_corral_engines_answer_as_corral_and_get_functions_by_value(start_cluster):
    _, c = start_cluster(2)
    dv = c[:]
    assert dv.apply_sync(_main_function(), [1]) == ["[1]", "[1]"]
    assert c._engine_kinds._stock == {uuid: False for uuid in c._engines.values()}
    assert c.load_balanced_view().apply_sync(_main_function(), 2) == "2"
