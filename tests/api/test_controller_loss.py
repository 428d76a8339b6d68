"""A controller killed under a client: every unfinished result fails with ``ControllerLost``
within seconds (never a hang), and so do later calls on that client.

Real processes: a corral controller and engines; only the controller is SIGKILLed, by pid.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

import corral
from corral.error import ControllerLost

# The client declares the controller lost 2 s after its connection closed; the goal is 5 s.
GOAL_S = 5.0
# Generous margin for a loaded 2-core machine; the measured figure is printed.
MARGIN_S = 5.0


def _sleep(t):
    import time

    time.sleep(t)
    return t


def _kill_controller(cluster) -> float:
    os.kill(cluster.controller.pid, signal.SIGKILL)
    cluster.controller.process.wait(10)
    return time.monotonic()


def test_get_fails_within_seconds_when_the_controller_dies(start_cluster):
    cluster, client = start_cluster(2)
    # Finished first: a load-balanced sleep may land on either engine and would queue it.
    done = client[1].apply_async(lambda: 42)
    assert done.get(timeout=30) == 42
    direct = client[0].apply_async(_sleep, 60)
    balanced = client.load_balanced_view().apply_async(_sleep, 60)
    time.sleep(0.5)  # both sleeps are running on their engines
    assert not direct.ready() and not balanced.ready()

    t0 = _kill_controller(cluster)
    with pytest.raises(ControllerLost) as info:
        direct.get(timeout=60)
    took = time.monotonic() - t0
    print(f"ar.get() raised ControllerLost {took:.2f} s after SIGKILL of the controller")
    assert took < GOAL_S + MARGIN_S
    message = str(info.value)
    assert client._core.url in message and "stopped answering" in message
    assert isinstance(info.value, ConnectionError)

    # Every other unfinished result fails the same way, at once.
    t1 = time.monotonic()
    with pytest.raises(ControllerLost):
        balanced.get(timeout=60)
    with pytest.raises(ControllerLost):
        balanced.wait()
    with pytest.raises(ControllerLost):
        client.wait(timeout=60)
    with pytest.raises(ControllerLost):
        client.wait([direct, balanced])
    assert time.monotonic() - t1 < 1.0
    # A result that arrived before the loss stays readable.
    assert done.get(timeout=1) == 42

    # Later calls raise too, instead of hanging.
    with pytest.raises(ControllerLost):
        client.ids
    with pytest.raises(ControllerLost):
        client.load_balanced_view().apply_async(_sleep, 0)
    with pytest.raises(ControllerLost):
        client.queue_status()
    assert "controller lost" in repr(client)


def test_client_wait_fails_when_the_controller_dies(start_cluster):
    cluster, client = start_cluster(1)
    ar = client[0].apply_async(_sleep, 60)
    time.sleep(0.5)
    t0 = _kill_controller(cluster)
    with pytest.raises(ControllerLost):
        client.wait(timeout=60)
    took = time.monotonic() - t0
    print(f"Client.wait() raised ControllerLost {took:.2f} s after SIGKILL of the controller")
    assert took < GOAL_S + MARGIN_S
    with pytest.raises(ControllerLost):
        ar.wait(timeout=1)


def test_ar_wait_fails_when_the_controller_dies(start_cluster):
    cluster, client = start_cluster(1)
    ar = client[0].apply_async(_sleep, 60)
    time.sleep(0.5)
    t0 = _kill_controller(cluster)
    with pytest.raises(ControllerLost):
        ar.wait(timeout=60)
    took = time.monotonic() - t0
    print(f"ar.wait() raised ControllerLost {took:.2f} s after SIGKILL of the controller")
    assert took < GOAL_S + MARGIN_S


def test_controller_lost_is_exported():
    assert corral.error.ControllerLost is ControllerLost is corral.ControllerLost
    assert issubclass(ControllerLost, corral.error.IPythonError)
