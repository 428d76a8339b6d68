"""A function's pickle is reused only while nothing cloudpickle would read from it changed."""

import math
import sys
import types

import cloudpickle

from corral.serialize import function_cache
from corral.serialize.serialize import serialize_object


def notebook_function(source: str, namespace: dict | None = None):
    """The function `f` defined by `source` as a notebook cell defines it: in `__main__`'s
    name, so cloudpickle sends it by value."""
    g = {"__name__": "__main__", **(namespace or {})}
    exec(source, g)
    return g["f"], g


def run_sent(f, *args):
    """Pickles `f` as `serialize_object` sends it and calls the copy."""
    [frame] = serialize_object(f)
    return cloudpickle.loads(frame)(*args)


def hits_during(action) -> int:
    before = function_cache.hits
    action()
    return function_cache.hits - before


def test_an_unchanged_function_is_pickled_once_and_its_copy_still_works():
    f, _ = notebook_function("import math\ndef f(x, k=2):\n    return math.sqrt(x) * k * SCALE",
                             {"SCALE": 10})
    assert run_sent(f, 4.0) == 40.0
    assert hits_during(lambda: run_sent(f, 9.0)) == 1
    assert run_sent(f, 9.0) == 60.0


def test_a_global_rebound_to_a_new_value_is_sent_anew():
    f, g = notebook_function("def f():\n    return SCALE", {"SCALE": 1})
    assert run_sent(f) == 1
    g["SCALE"] = 2
    assert hits_during(lambda: run_sent(f)) == 0
    assert run_sent(f) == 2
    del g["SCALE"]
    g["SCALE"] = 3
    assert run_sent(f) == 3


def test_a_global_defined_after_the_first_send_is_seen():
    f, g = notebook_function("def f():\n    return LATER")
    serialize_object(f)
    g["LATER"] = "here"
    assert run_sent(f) == "here"


def test_mutable_globals_closures_and_attributes_are_never_kept():
    f, g = notebook_function("def f():\n    return len(ITEMS)", {"ITEMS": [1]})
    assert run_sent(f) == 1
    g["ITEMS"].append(2)
    assert hits_during(lambda: run_sent(f)) == 0
    assert run_sent(f) == 2

    def make(n):
        return lambda: n

    closure = make(5)
    serialize_object(closure)
    assert hits_during(lambda: serialize_object(closure)) == 0

    h, _ = notebook_function("def f():\n    return f.tag")
    h.tag = "a"
    assert run_sent(h) == "a"
    h.tag = "b"
    assert run_sent(h) == "b"


def test_a_helper_defined_in_the_notebook_is_sent_by_value_every_time():
    f, g = notebook_function("def helper():\n    return 1\ndef f():\n    return helper()")
    assert run_sent(f) == 1
    helper, _ = notebook_function("def f():\n    return 2")
    g["helper"] = helper
    assert run_sent(f) == 2
    helper.__code__ = (lambda: 3).__code__
    assert run_sent(f) == 3


def test_new_defaults_code_and_names_are_sent_anew():
    f, _ = notebook_function("def f(x=1):\n    return x")
    assert run_sent(f) == 1
    f.__defaults__ = (2,)
    assert run_sent(f) == 2
    f.__code__ = (lambda x=1: x * 10).__code__
    assert run_sent(f) == 20
    f.__kwdefaults__ = None
    f.__name__ = "renamed"
    [frame] = serialize_object(f)
    assert cloudpickle.loads(frame).__name__ == "renamed"


def test_a_mutable_default_is_never_kept():
    f, _ = notebook_function("def f(acc=[]):\n    return len(acc)")
    f.__defaults__[0].append(1)
    assert run_sent(f) == 1
    f.__defaults__[0].append(1)
    assert run_sent(f) == 2


def test_an_import_since_the_last_send_sends_the_function_anew():
    f, _ = notebook_function("import math\ndef f():\n    return math.pi")
    serialize_object(f)
    assert hits_during(lambda: serialize_object(f)) == 1
    name = "corral_function_cache_probe"
    sys.modules[name] = types.ModuleType(name)
    try:
        assert hits_during(lambda: serialize_object(f)) == 0
    finally:
        del sys.modules[name]


def test_classes_and_functions_by_reference_are_safe_globals_but_local_ones_are_not():
    f, _ = notebook_function("def f():\n    return sqrt(4.0), OrderedDict",
                             {"sqrt": math.sqrt, "OrderedDict": __import__("collections").OrderedDict})
    run_sent(f)
    assert hits_during(lambda: run_sent(f)) == 1

    class Local:
        pass

    g, _ = notebook_function("def f():\n    return Local", {"Local": Local})
    serialize_object(g)
    assert hits_during(lambda: serialize_object(g)) == 0


def test_a_recursive_function_is_kept():
    f, _ = notebook_function("def f(n):\n    return 1 if n < 2 else n * f(n - 1)")
    assert run_sent(f, 5) == 120
    assert hits_during(lambda: run_sent(f, 6)) == 1


def test_the_engine_reuses_the_last_function_only_for_the_same_safe_pickle():
    from corral.engine.namespace import bind_sent_functions
    from corral.engine.namespace import LastSentFunction
    from corral.serialize.serialize import pack_apply_message, unpack_apply_message

    reuse = LastSentFunction()
    user_ns: dict = {}
    f, _ = notebook_function("def f(x):\n    return x * SCALE", {"SCALE": 3})
    frames = pack_apply_message(f, (2,), {})
    first, args, kwargs = unpack_apply_message(frames, user_ns, reuse)
    again, _, _ = unpack_apply_message(frames, user_ns, reuse)
    assert again is first
    bound, args, kwargs = bind_sent_functions(again, args, kwargs, user_ns)
    assert bound is not again and bound(*args) == 6 and user_ns["SCALE"] == 3

    # Another pickle (here: the global changed on the client) is unpickled afresh.
    f.__globals__["SCALE"] = 4
    changed, _, _ = unpack_apply_message(pack_apply_message(f, (2,), {}), user_ns, reuse)
    assert changed is not first and changed.__globals__["SCALE"] == 4

    # A function whose sent globals may change in place is never reused.
    h, _ = notebook_function("def f():\n    return len(ITEMS)", {"ITEMS": [1, 2]})
    frames = pack_apply_message(h, (), {})
    one, _, _ = unpack_apply_message(frames, user_ns, reuse)
    two, _, _ = unpack_apply_message(frames, user_ns, reuse)
    assert one is not two
