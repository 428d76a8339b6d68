"""`corral watch`: run as its own process (so another client than the submitter), it
follows a task's published data in a real terminal (a tmux pane), prints snapshots as plain
lines when piped, shows the engines with --cluster, and refuses unknown msg_ids."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cluster_processes import wait_for
from corral.watch import model
from corral.watch.render import sparkline


def publish_slowly(n, delay):
    import time

    from corral.datapub import publish_data

    for i in range(n):
        publish_data({"i": i})
        time.sleep(delay)
    return n


def publish_then_wait(seconds):
    import time

    import numpy as np

    from corral.datapub import publish_data

    publish_data({"i": 5, "x": np.arange(10.0), "name": "demo"})
    time.sleep(seconds)
    return "finished"


def publish_then_fail():
    from corral.datapub import publish_data

    publish_data({"i": 1})
    raise ValueError("the task gave up")


def watch_argv(cluster, *args):
    return [sys.executable, "-m", "corral", "watch", "--url-file", str(cluster.client_file), *args]


def run_watch(cluster, *args, timeout=60):
    return subprocess.run(watch_argv(cluster, *args), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


class Tmux:
    """A private tmux server (its own socket) with one pane running a command."""

    def __init__(self, socket):
        tmux = shutil.which("tmux")
        assert tmux, "tmux is missing: `make install` installs it (the Makefile's tmux target)"
        self.base = [tmux, "-S", str(socket), "-f", os.devnull]

    def run(self, *args) -> str:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout

    def start(self, command: str) -> None:
        self.run("new-session", "-d", "-s", "watch", "-x", "150", "-y", "40", command)

    def pane(self) -> str:
        return self.run("capture-pane", "-p", "-t", "watch")

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)


def table_values(pane: str, column: str) -> list[str]:
    """The cells of ``column`` in the rich table drawn in ``pane`` (rows split by │)."""
    lines = [line.replace("┃", "│") for line in pane.splitlines()]  # header: heavy bars
    lines = [line for line in lines if "│" in line]
    header = next((cells for cells in (_cells(l) for l in lines) if "engine" in cells), None)
    if header is None or column not in header:
        return []
    at = header.index(column)
    return [cells[at] for cells in map(_cells, lines) if cells != header and len(cells) == len(header)]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("│").split("│")]


def test_watch_in_a_terminal_shows_each_published_value_and_exits_with_the_task(
        start_cluster, tmp_path):
    cluster, client = start_cluster(2)
    ar = client.load_balanced_view().apply_async(publish_slowly, 10, 0.7)
    msg_id = ar.msg_ids[0]
    tmux = Tmux(tmp_path / "tmux.sock")
    argv = " ".join(watch_argv(cluster, msg_id))
    tmux.start(f"{argv}; echo watch exited $?; sleep 60")
    try:
        seen: list[int] = []

        def shows_value():
            values = table_values(tmux.pane(), "i")
            if values and values[0].isdigit():
                if not seen or int(values[0]) != seen[-1]:
                    seen.append(int(values[0]))
            return len(seen) >= 2

        try:
            wait_for(shows_value, 30, "the pane to show one published value, then the next")
        except TimeoutError:
            raise AssertionError(f"values seen: {seen}; the pane:\n{tmux.pane()}") from None
        assert seen[1] > seen[0], seen
        wait_for(lambda: "watch exited" in tmux.pane(), 30, "corral watch to exit with the task")
        pane = tmux.pane()
        assert "watch exited 0" in pane, pane
        assert table_values(pane, "i") == ["9"], pane  # the last value published
        assert "done" in pane and "result: 10" in pane, pane
        assert ar.get(timeout=10) == 10
    finally:
        tmux.kill()


def test_once_prints_a_snapshot_of_scalars_and_array_summaries(start_cluster):
    cluster, client = start_cluster(1)
    ar = client.load_balanced_view().apply_async(publish_then_wait, 30)
    wait_for(lambda: "x" in ar.data, 30, "the task to publish")
    done = run_watch(cluster, "--once", ar.msg_ids[0])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("engine 0 seq=1 "), done.stdout
    assert "alive=yes" in lines[0] and "i=5" in lines[0] and "name=demo" in lines[0]
    assert lines[1].startswith("  x: shape=(10,) dtype=float64 min=0 mean=4.5 max=9 "), done.stdout
    assert lines[1].endswith("▁▁▂▃▄▄▅▆▇█"), done.stdout  # the sparkline of 0..9
    assert len(lines) == 2, done.stdout  # still running: no outcome yet


def test_a_failed_task_shows_its_error_and_exits_non_zero(start_cluster):
    cluster, client = start_cluster(1)
    ar = client.load_balanced_view().apply_async(publish_then_fail)
    with pytest.raises(Exception):
        ar.get(timeout=30)
    done = run_watch(cluster, ar.msg_ids[0])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "i=1" in done.stdout and "task failed" in done.stdout, done.stdout
    assert "ValueError" in done.stdout and "the task gave up" in done.stdout, done.stdout


def publish_k(k):
    from corral.datapub import publish_data

    publish_data({"k": k})
    if k == 1:
        raise KeyError("k1")
    return k


def test_several_tasks_are_watched_together_and_one_failure_fails_the_watch(start_cluster):
    cluster, client = start_cluster(2)
    ar = client[:].map_async(publish_k, [0, 1])
    done = run_watch(cluster, *ar.msg_ids)
    assert done.returncode == 1, done.stdout + done.stderr
    frames = done.stdout.split("\n\n")
    last = [f for f in frames if "engine" in f][-1].splitlines()
    assert last[0].startswith("engine 0 ") and last[0].endswith(" k=0"), done.stdout
    assert last[1].startswith("engine 1 ") and last[1].endswith(" k=1"), done.stdout
    assert "task failed" in done.stdout and "KeyError: 'k1'" in done.stdout, done.stdout


def test_cluster_shows_engines_and_running_tasks_and_ctrl_c_exits(start_cluster):
    cluster, client = start_cluster(2)
    ar = client[0].apply_async(publish_then_wait, 30)
    wait_for(lambda: "x" in ar.data, 30, "the task to start")
    once = run_watch(cluster, "--cluster", "--once")
    assert once.returncode == 0, once.stderr
    lines = once.stdout.splitlines()
    assert lines[0].startswith("engine 0 alive=yes queue=1 "), once.stdout
    assert f"running={ar.msg_ids[0]}" in lines[0], once.stdout
    assert lines[1].startswith("engine 1 alive=yes queue=0 tasks=0 "), once.stdout
    assert "running" not in lines[1]
    assert lines[2] == "unassigned=0"

    live = subprocess.Popen(watch_argv(cluster, "--cluster"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert live.stdout.readline().startswith("engine 0 alive=yes")
        live.send_signal(signal.SIGINT)
        out, err = live.communicate(timeout=20)
        assert live.returncode == 0, err
        assert "Traceback" not in err, err
    finally:
        if live.poll() is None:
            live.kill()
            live.wait(10)
        live.stdout.close()  # else a failure here leaks them into a later test's warnings
        live.stderr.close()


def test_an_unknown_msg_id_is_refused_with_a_clear_message(start_cluster):
    cluster, _ = start_cluster(1)
    done = run_watch(cluster, "no-such-task")
    assert done.returncode == 2
    assert "no task with msg_id no-such-task is known" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_no_cluster_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "corral", "watch", "--profile-dir",
                           str(tmp_path / "nothing"), "abc"], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, IPYTHONDIR=str(tmp_path)))
    assert done.returncode == 2
    assert "No cluster found" in done.stderr, done.stderr


def publish_fast(n, seconds):
    import time

    from corral.datapub import publish_data

    for i in range(n):
        publish_data({"i": i})
        time.sleep(seconds / n)
    return n


def test_a_fast_publisher_is_shown_newest_first_without_a_line_per_update(start_cluster):
    cluster, client = start_cluster(1)
    ar = client.load_balanced_view().apply_async(publish_fast, 3000, 3.0)
    done = run_watch(cluster, ar.msg_ids[0])
    assert done.returncode == 0, done.stderr
    frames = [line for line in done.stdout.splitlines() if line.startswith("engine 0 ")]
    assert frames[-1].endswith(" i=2999"), done.stdout[-500:]
    # Redraws are spaced (at most 10 a second): far fewer frames than updates.
    assert len(frames) < 300, len(frames)


def test_sparklines_and_array_summaries():
    assert sparkline([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]) == "▁▂▃▄▅▆▇█"
    assert sparkline([1.0, 1.0]) == "▁▁"  # flat: no division by zero
    assert sparkline([0.0, float("nan"), 1.0]) == "▁ █"  # NaN is a gap
    assert len(sparkline([float(i) for i in range(1000)], width=40)) == 40
    a = model.summarize_array(np.arange(6, dtype=np.int32).reshape(2, 3))
    assert (a.shape, a.dtype, a.min, a.mean, a.max, a.values) == ((2, 3), "int32", 0, 2.5, 5, None)


def test_nan_values_do_not_count_as_changes():
    row = model._row("m", {"loss": float("nan"), "x": np.array([1.0, np.nan])}, {"seq": 1})
    again = model._row("m", {"loss": float("nan"), "x": np.array([1.0, np.nan])}, {"seq": 1})
    assert not model.TaskFrame([again], False).changed_since(model.TaskFrame([row], False))
    newer = model._row("m", {"loss": 0.5}, {"seq": 2})
    assert model.TaskFrame([newer], False).changed_since(model.TaskFrame([row], False))
