"""Functions both compatibility suites run on engines. `@ipp.interactive` puts them in
`__main__`, so a stock client sends them by value and engines run them in their namespace;
stock engines import `ipyparallel.datapub`, corral engines provide it."""

import ipyparallel as ipp


@ipp.interactive
def publish_once():
    from ipyparallel.datapub import publish_data

    publish_data(dict(a="hi"))
    return "done"


@ipp.interactive
def publish_loop():
    import time

    from ipyparallel.datapub import publish_data

    for i in range(5):
        publish_data(dict(i=i))
        time.sleep(0.05)
    return "done"


@ipp.interactive
def say_hello():
    print("hello from an engine")
    return 1


@ipp.interactive
def fail():
    raise ValueError("boom")


@ipp.interactive
def arange(n):
    import numpy

    return numpy.arange(n, dtype="float64")


@ipp.interactive
def double(x):
    return x * 2


@ipp.interactive
def inc(x):
    return x + 1


def check_coalescing_broadcast(c, n_engines: int) -> None:
    """A stock client's ``broadcast_view(is_coalescing=True)``: the controller answers each
    request once, with every engine's result, large arrays included."""
    import numpy as np

    view = c.broadcast_view(is_coalescing=True)
    ar = view.apply_async(double, 5)
    assert ar.get(timeout=30) == [10] * n_engines
    assert sorted(ar.engine_id) == sorted(c.ids)
    arrays = view.apply_async(arange, 100_000).get(timeout=30)
    assert len(arrays) == n_engines
    for a in arrays:
        np.testing.assert_array_equal(a, np.arange(100_000, dtype="float64"))
