"""Large arrays through `publish_data` on an all-corral cluster (W6 in miniature): a task
publishing 8 MB arrays faster than they can be sent keeps the engine's memory bounded in
bytes, the client ends with the last values, and every update it sees is one whole
snapshot (the array as it was when `publish_data` was called, not as it was later).
"""

import time

import numpy as np


def publish_arrays(n, mb):
    """Runs on the engine: publish dict(a=a, i=i) n times with a[0] = a[-1] = i, one
    preallocated array changed in place; returns the engine's resident memory in MB just
    before the loop and at its peak during it."""
    import numpy as np

    from corral.datapub import publish_data

    def vm(field):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} in /proc/self/status")

    a = np.zeros(mb * 2**20 // 8)
    a[:] = 1.0  # touch every page before measuring
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM starts afresh: the peak of this loop alone
    before = vm("VmRSS")
    for i in range(n):
        a[0] = a[-1] = i
        publish_data(dict(a=a, i=i))
    # Changed after the last publication: the client must not see this.
    a[:] = -1.0
    return before, vm("VmHWM")


def test_fast_8mb_publications_stay_bounded_and_arrive_whole(start_cluster):
    _, client = start_cluster(1)
    view = client[0]
    n = 100  # 800 MB published as fast as the engine can pickle
    ar = view.apply_async(publish_arrays, n, 8)
    torn = []
    deadline = time.monotonic() + 120
    while not ar.ready() and time.monotonic() < deadline:
        d = ar.data
        if "a" in d and not (d["a"][0] == d["a"][-1] == d["i"]):
            torn.append((d["i"], d["a"][0], d["a"][-1]))
        time.sleep(0.005)
    before, peak = ar.get(timeout=60)
    assert not torn, f"updates mixed values of different publications: {torn[:5]}"
    final = ar.data
    assert final["i"] == n - 1
    assert final["a"][0] == final["a"][-1] == n - 1, "the last update is the array as published"
    assert final["a"][1] == 1.0
    # Unsent and in-flight publications are bounded at 16 MB each by default (plus one
    # update each and pickling); ZeroMQ's message-counted queue alone used to hold 32.
    grown = peak - before
    print(f"engine grew {grown:.0f} MB")
    assert grown < 100, f"the engine grew {grown:.0f} MB while publishing 8 MB arrays"


def test_the_bound_is_set_per_engine_from_the_environment(start_cluster, monkeypatch):
    # Engines inherit it from whoever starts them (here corral.Cluster).
    monkeypatch.setenv("CORRAL_ENGINE_MAX_DATA_MB", "1")
    _, client = start_cluster(1)
    before, peak = client[0].apply_sync(publish_arrays, 60, 8)
    # 1 MB: one 8 MB update unsent, one in flight, one being copied.
    grown = peak - before
    print(f"engine grew {grown:.0f} MB")
    assert grown < 48, f"the engine grew {grown:.0f} MB with a 1 MB bound"
