"""`corral watch` against a stock ipyparallel controller and engines: the controller keeps
no published data, so the watcher shows what arrives live from when it attaches, and no
snapshot sequence numbers; the end of the task and its result still come from the
controller's records."""

from __future__ import annotations

import subprocess
import sys

import cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def publish_slowly(n, delay):
    import time

    from ipyparallel.datapub import publish_data

    for i in range(n):
        publish_data({"i": i})
        time.sleep(delay)
    return n


def watch(stock, *args):
    url_file = stock.profile_dir / "security" / "ipcontroller-client.json"
    return subprocess.run([sys.executable, "-m", "corral", "watch", "--url-file", str(url_file),
                           *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_watch_a_task_and_the_engines_of_a_stock_cluster(stock):
    ar = stock.client[0].apply_async(publish_slowly, 12, 0.3)
    engines = watch(stock, "--cluster", "--once")
    assert engines.returncode == 0, engines.stderr
    assert engines.stdout.startswith("engine 0 alive=yes "), engines.stdout
    assert "engine 1 alive=yes" in engines.stdout, engines.stdout

    done = watch(stock, ar.msg_ids[0])
    assert done.returncode == 0, done.stdout + done.stderr
    frames = [line for line in done.stdout.splitlines() if line.startswith("engine 0 ")]
    assert len(frames) >= 2, done.stdout  # followed live, one value after another
    assert frames[-1].endswith(" i=11"), done.stdout
    assert "seq=- " in frames[-1], "a stock controller counts no publications"
    assert "result: 12" in done.stdout
    assert ar.get(timeout=10) == 12
