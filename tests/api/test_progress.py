"""The progress convention: tasks that publish {'progress': k, 'total': n} are counted in
items, summed over engines, by wait_interactive (and %px, tests/magics/test_px_progress.py)."""

from __future__ import annotations

import re
import sys
import time

from corral.client.progress import Progress, summarize


def count_items(steps, pause):
    """Publishes the progress convention: ``steps`` items, one every ``pause`` seconds."""
    import time as _time

    from corral.datapub import publish_data

    for k in range(steps):
        _time.sleep(pause)
        publish_data({"progress": k + 1, "total": steps})
    return steps


# -- the convention's rules (no cluster needed) ------------------------------------------

def test_summarize_counts_tasks_without_progress_keys():
    assert summarize([{}, {"a": 1}, {}], [True, False, True]) == Progress(2, 3, "tasks")


def test_summarize_sums_items_and_counts_finished_tasks_as_complete():
    datas = [{"progress": 3, "total": 10}, {"progress": 20, "total": 20},
             {"progress": 1, "total": 30}]
    # The third task finished after publishing 1/30: it counts as 30 of 30.
    assert summarize(datas, [False, False, True]) == Progress(3 + 20 + 30, 60, "items")


def test_summarize_counts_a_silent_task_as_one_item_and_clamps_bad_values():
    datas = [{"progress": 50, "total": 10}, {}, {"progress": "x", "total": 5},
             {"progress": -4, "total": 8}]
    # 50 is clamped to 10; {} and the non-numeric one count as one item each.
    assert summarize(datas, [False, True, False, False]) == Progress(10 + 1 + 0 + 0, 10 + 1 + 1 + 8, "items")


# -- progress in wait_interactive ---------------------------------------------------------

def test_wait_interactive_sums_published_items_over_engines(client4, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # the plain text line, parseable
    dv = client4[:]
    # Engine k has 10*(k+1) items: 10+20+30+40 = 100 in all.
    dv.scatter("steps", [10, 20, 30, 40], flatten=True, block=True)
    ar = dv.apply_async(lambda: count_items(steps, 0.03))  # noqa: F821 (pushed name)
    ar.wait_interactive(interval=0.05, timeout=60)
    assert ar.get(timeout=30) == [10, 20, 30, 40]
    out = capsys.readouterr().out
    assert "100/100 items done" in out.rstrip().split("\r")[-1], out
    seen = {int(n) for n in re.findall(r"(\d+)/100 items done", out)}
    assert any(0 < n < 100 for n in seen), f"no intermediate item count in {out!r}"


def test_wait_interactive_without_the_convention_still_counts_tasks(client4, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    ar = client4[:].apply_async(time.sleep, 0.2)
    ar.wait_interactive(interval=0.05, timeout=30)
    out = capsys.readouterr().out
    assert "4/4 tasks finished" in out and "items" not in out
