"""The Data Publication flow on an all-corral cluster: corral client, controller, engines."""

import time

import numpy as np
import pytest

import corral


def publish_it():
    from corral.datapub import publish_data

    publish_data(dict(a="hi"))


def simulation_loop(steps=5, pause=0.1):
    import time

    import numpy as np

    from corral.datapub import publish_data

    for i in range(steps):
        publish_data(dict(a=np.random.rand(20), i=i))
        time.sleep(pause)
    return steps


def test_publish_it_on_four_engines(client4):
    dv = client4[:]
    dv.block = False
    ar = dv.apply_async(publish_it)
    ar.get(timeout=30)
    assert ar.data == [{"a": "hi"}] * 4


def test_data_is_empty_dicts_before_any_publication(client4):
    def late():
        import time

        from corral.datapub import publish_data

        time.sleep(1.0)
        publish_data(dict(x=1))

    ar = client4[:].apply_async(late)
    assert ar.data == [{}, {}, {}, {}]
    ar.get(timeout=30)
    assert ar.data == [{"x": 1}] * 4


def test_simulation_loop_data_changes_live_and_is_final_at_get(client4):
    dv = client4[:]
    ar = dv.apply_async(simulation_loop, 10, 0.2)
    seen = set()
    deadline = time.monotonic() + 30
    while not ar.ready() and time.monotonic() < deadline:
        seen.update(d.get("i") for d in ar.data)
        time.sleep(0.05)
    assert ar.get(timeout=30) == [10] * 4
    assert len(seen - {None}) >= 3, f"saw only {seen} while running"
    for d in ar.data:
        assert d["i"] == 9
        assert isinstance(d["a"], np.ndarray) and d["a"].shape == (20,)


def test_reply_never_overtakes_data_under_load(start_cluster):
    """Many large publications: when get() returns, the last one is already in ar.data."""

    def flood(n):
        import numpy as np

        from corral.datapub import publish_data

        a = np.zeros(100_000)
        for i in range(n):
            a[0] = i
            publish_data(dict(a=a, i=i))
        return n

    _, client = start_cluster(2)
    ar = client[:].apply_async(flood, 2000)
    assert ar.get(timeout=120) == [2000, 2000]
    for d in ar.data:
        assert d["i"] == 1999
        assert d["a"][0] == 1999


def test_keys_merge_and_latest_value_wins(start_cluster):
    def pub():
        from corral.datapub import publish_data

        publish_data(dict(a=1, b=1))
        publish_data(dict(b=2))
        publish_data(dict(c=3))

    _, client = start_cluster(1)
    ar = client[0].apply_async(pub)
    ar.get(timeout=30)
    assert ar.data == {"a": 1, "b": 2, "c": 3}  # a single dict for a single-engine view


def test_publish_data_outside_an_engine_says_so():
    from corral.datapub import publish_data

    with pytest.raises(RuntimeError, match="engine"):
        publish_data(dict(a=1))


def test_on_data_reacts_to_each_update_without_polling(start_cluster):
    _, client = start_cluster(2)
    ar = client[:].apply_async(simulation_loop, 5, 0.2)
    seen = []
    watcher = ar.on_data(lambda data: seen.append([d.get("i") for d in data]))
    watcher.join(timeout=30)
    assert not watcher.is_alive()
    assert ar.ready()
    assert seen[-1] == [4, 4]
    assert len({tuple(s) for s in seen}) >= 4, seen  # intermediate steps were delivered


def test_iter_data_yields_until_done(start_cluster):
    _, client = start_cluster(1)
    ar = client[0].apply_async(simulation_loop, 3, 0.1)
    steps = [d.get("i") for d in ar.iter_data(timeout=30)]
    assert steps[-1] == 2
    assert ar.get(timeout=5) == 3
