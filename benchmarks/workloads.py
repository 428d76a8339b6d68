"""The workloads of BENCHMARKS.md. Each takes the implementation's module (`corral` or
`ipyparallel`, both with `Cluster`) and returns named figures for one run."""

from __future__ import annotations

import time

#: Figures where smaller is better (times); the rest are rates.
LOWER_IS_BETTER = {
    "ready_s_2": True,
    "stop_s_2": True,
    "ready_s_4": True,
    "stop_s_4": True,
    "apply_sync_p50_ms": True,
    "apply_sync_p99_ms": True,
}


def _cluster(ipp, profile_dir: str, n: int):
    import logging

    # Stock ipyparallel wants a number here; corral takes both forms.
    return ipp.Cluster(
        n=n, profile_dir=profile_dir, cluster_id=f"bench{time.monotonic_ns()}", log_level=logging.ERROR
    )


def W1(ipp, impl: str, profile_dir: str) -> dict:
    """Start a local cluster of 2 and of 4 engines until the client sees them all; stop it."""
    out = {}
    for n in (2, 4):
        cluster = _cluster(ipp, profile_dir, n)
        t0 = time.perf_counter()
        client = cluster.start_and_connect_sync()
        assert len(client.ids) == n, client.ids
        out[f"ready_s_{n}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cluster.stop_cluster_sync()
        out[f"stop_s_{n}"] = time.perf_counter() - t0
    return out


def noop():
    pass


def W2(ipp, impl: str, profile_dir: str) -> dict:
    """DirectView on one engine, apply_sync(noop), 2000 calls after warm-up."""
    cluster = _cluster(ipp, profile_dir, 1)
    client = cluster.start_and_connect_sync()
    try:
        view = client[0]
        for _ in range(200):
            view.apply_sync(noop)
        times = []
        for _ in range(2000):
            t0 = time.perf_counter()
            view.apply_sync(noop)
            times.append(time.perf_counter() - t0)
        times.sort()
        return {
            "apply_sync_p50_ms": times[len(times) // 2] * 1e3,
            "apply_sync_p99_ms": times[int(len(times) * 0.99)] * 1e3,
        }
    finally:
        cluster.stop_cluster_sync()


def publisher(n, datapub_module):
    """Runs on the engine: publish dict(i=i) as fast as possible; returns calls/s."""
    import importlib
    import time

    publish_data = importlib.import_module(datapub_module).publish_data
    t0 = time.perf_counter()
    for i in range(n):
        publish_data(dict(i=i))
    return n / (time.perf_counter() - t0)


def _poll_until_last(
    ar, n: int, per_engine: int, pause: float = 0.0, timeout: float = 600.0
) -> tuple[float, int]:
    """Poll `ar.data` (in a tight loop, or every `pause` seconds) until every engine's last
    i is visible and the task is done. Returns (seconds from the first poll, distinct
    updates seen)."""
    t0 = time.perf_counter()
    seen = 0
    last: list = [None] * per_engine
    while True:
        data = ar.data
        data = data if isinstance(data, list) else [data]
        for k, d in enumerate(data):
            i = d.get("i")
            if i != last[k]:
                last[k] = i
                seen += 1
        if all(i == n - 1 for i in last) and ar.ready():
            return time.perf_counter() - t0, seen
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"saw {last} after {timeout} s")
        if pause:
            time.sleep(pause)


def W4(ipp, impl: str, profile_dir: str) -> dict:
    """One engine, then every engine, publishes dict(i=i) 20000 times; the client polls
    ar.data in a tight loop until it sees the last i and the task is done."""
    n = 20000
    cluster = _cluster(ipp, profile_dir, 2)
    client = cluster.start_and_connect_sync()
    datapub = f"{impl}.datapub"
    out = {}
    try:
        client[:].apply_sync(publisher, 10, datapub)  # warm-up: imports on the engines
        t0 = time.perf_counter()
        ar = client[0].apply_async(publisher, n, datapub)
        elapsed, seen = _poll_until_last(ar, n, 1)
        total = time.perf_counter() - t0
        out["publish_calls_per_s_engine"] = ar.get()
        out["end_to_end_updates_per_s_1_engine"] = n / total
        out["updates_seen_1_engine"] = seen
        t0 = time.perf_counter()
        ar = client[0].apply_async(publisher, n, datapub)
        _poll_until_last(ar, n, 1, pause=0.001)
        out["end_to_end_updates_per_s_1_engine_1ms_poll"] = n / (time.perf_counter() - t0)
        view = client[:]
        engines = len(client.ids)
        t0 = time.perf_counter()
        ar = view.apply_async(publisher, n, datapub)
        elapsed, seen = _poll_until_last(ar, n, engines)
        total = time.perf_counter() - t0
        out["publish_calls_per_s_all_engines"] = sum(ar.get())
        out["end_to_end_updates_per_s_all_engines"] = engines * n / total
        out["updates_seen_all_engines"] = seen
        return out
    finally:
        cluster.stop_cluster_sync()


# Functions sent to engines must travel by value: engines cannot import this module.
# Both cloudpickle (corral) and ipyparallel's canning send `__main__` functions by value.
for _f in (noop, publisher):
    _f.__module__ = "__main__"
