"""An engine that unregisters and exits at once is dropped by the controller at once.

The unregistration used to be left in ZeroMQ's queue when the process ended straight after
it: the controller then kept the engine for ~30 s, until its heartbeats were missed."""

from __future__ import annotations

import subprocess
import sys
import time

from cluster_processes import Processes, start_corral_controller, wait_for

import corral

#: Well under the ~30 s the controller takes to drop an engine whose heartbeats stopped.
DROPPED_WITHIN = 10.0

SCRIPT = """
import os, sys
from corral import _core
rt = _core.EngineRuntime.connect(sys.argv[1], timeout=30)
print(rt.id, flush=True)
sys.stdin.readline()
rt.close(True)
os._exit(0)  # no interpreter teardown: nothing but close() may flush the message
"""


def test_an_engine_that_exits_right_after_unregistering_is_dropped_at_once(tmp_path):
    procs = Processes(tmp_path)
    profile_dir = tmp_path / "profile"
    profile_dir.mkdir()
    engine_file = profile_dir / "security" / "ipcontroller-engine.json"
    client = None
    try:
        start_corral_controller(procs, profile_dir)
        client = corral.Client(profile_dir=str(profile_dir), timeout=30)
        for _ in range(3):
            engine = subprocess.Popen([sys.executable, "-c", SCRIPT, str(engine_file)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                engine_id = int(engine.stdout.readline())
                wait_for(lambda: engine_id in client.ids, 60, "the engine to register")
                engine.stdin.write("go\n")
                engine.stdin.flush()
                assert engine.wait(timeout=30) == 0
                t0 = time.monotonic()
                wait_for(lambda: engine_id not in client.ids, DROPPED_WITHIN,
                         f"engine {engine_id} to be dropped after it unregistered")
                print(f"engine {engine_id} dropped {time.monotonic() - t0:.3f} s after its exit")
            finally:
                if engine.poll() is None:
                    engine.kill()
                    engine.wait(timeout=10)
                engine.stdin.close()
                engine.stdout.close()
    finally:
        if client is not None:
            client.close()
        procs.stop_all()
