"""An engine process that exits right after it started (and registered) is reported at
once by the launcher that started it: `Cluster.wait_for_engines` fails within seconds with
the engine's exit code and log tail, instead of waiting out its timeout (the controller's
heartbeat alone takes ~33 s across hosts), and the launcher logs it and calls `on_stop`."""

from __future__ import annotations

import logging
import sys
import time

import pytest

import corral
from cluster_processes import wait_for
from corral.cluster.launcher import EngineSetExited
from corral.cluster.local_launcher import LocalEngineSetLauncher

#: A real `corral engine` that prints a last word and exits with code 7 after `DIES_AFTER` s.
DIES_AFTER = 3.0
CRASHING_ENGINE = (
    "import os, runpy, sys, threading\n"
    "def die():\n"
    "    os.write(2, b'engine crashing on purpose\\n')  # fd 2: the engine captures sys.stderr\n"
    "    os._exit(7)\n"
    f"threading.Timer({DIES_AFTER}, die).start()\n"
    "sys.argv = ['corral'] + sys.argv[1:]\n"
    "runpy.run_module('corral', run_name='__main__', alter_sys=True)\n"
)


class OneCrashingEngine(LocalEngineSetLauncher):
    """Local engines, the first of which crashes soon after it starts."""

    def _command(self) -> list[str]:
        command = super()._command()
        if getattr(self, "_crashing_started", False):
            return command
        self._crashing_started = True
        assert command[1:3] == ["-m", "corral"], command
        return [command[0], "-c", CRASHING_ENGINE, *command[3:]]


def test_wait_for_engines_fails_at_once_with_the_engines_log(tmp_path, caplog):
    stopped = []
    cluster = corral.Cluster(n=2, engines=OneCrashingEngine, profile_dir=tmp_path / "profile",
                             cluster_id="crash", engine_timeout=100)
    try:
        cluster.start_controller_sync()
        set_id = cluster.start_engines_sync()
        cluster.engines[set_id].on_stop(stopped.append)
        client = cluster.connect_client_sync()
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="corral.cluster"):
            with pytest.raises(EngineSetExited) as info:
                # the waiting a plain timeout would do: 100 s, more than the heartbeat's 33
                cluster.wait_for_engines_sync(client, 3)
        took = time.monotonic() - t0
        message = str(info.value)
        assert "with code 7" in message and "engine crashing on purpose" in message, message
        assert took < 30, f"noticed only after {took:.1f} s"
        print(f"engine exit reported {took:.2f} s into the wait")
        # the launcher's watcher told the log and the callbacks (it calls them right after
        # it records the exit that the wait above saw: wait for them)
        wait_for(lambda: stopped, 10, "the on_stop callback")
        assert [s["exit_code"] for s in stopped] == [7]
        assert any("exited (code 7)" in r.getMessage() and "crashing on purpose" in r.getMessage()
                   for r in caplog.records), caplog.text
        # the other engine serves on, once the controller dropped the crashed one (it had
        # registered: on a loaded machine the controller may still list it here)
        wait_for(lambda: len(client.ids) == 1, 60, "the crashed engine to be unregistered")
        assert client[:].apply_sync(lambda: 42) == [42]
    finally:
        cluster.stop_cluster_sync()


def test_the_client_s_wait_for_engines_also_fails_at_once(tmp_path):
    """`rc.wait_for_engines` on a client of the cluster (`rc.cluster`) watches its engine
    sets as ipyparallel's does, instead of waiting out its timeout."""
    cluster = corral.Cluster(n=2, engines=OneCrashingEngine, profile_dir=tmp_path / "profile",
                             cluster_id="crash-client", engine_timeout=100)
    try:
        cluster.start_controller_sync()
        cluster.start_engines_sync()
        client = cluster.connect_client_sync()
        assert client.cluster is cluster
        t0 = time.monotonic()
        with pytest.raises(EngineSetExited, match="with code 7"):
            client.wait_for_engines(3, timeout=100)
        took = time.monotonic() - t0
        assert took < 30, f"noticed only after {took:.1f} s"
    finally:
        cluster.stop_cluster_sync()


def test_a_timeout_names_what_the_engines_said(tmp_path):
    """Without a launcher that saw an exit, the TimeoutError still says where the logs are."""
    cluster = corral.Cluster(n=1, profile_dir=tmp_path / "profile", cluster_id="slow", engine_timeout=2)
    try:
        cluster.start_controller_sync()
        cluster.start_engines_sync()
        client = cluster.connect_client_sync()
        with pytest.raises(TimeoutError, match="waited for 5; engine logs are in"):
            cluster.wait_for_engines_sync(client, 5)
    finally:
        cluster.stop_cluster_sync()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
