"""The live data view (corral.widgets) on real clusters: the throttle under a 1 kHz
publisher, the byte budget, snapshot ages, and the static fallback."""

from __future__ import annotations

import re
import sys
import time

import pytest


def publish_fast(seconds):
    """Publishes about 1000 times a second for ``seconds``: a counter, a 1-D and a 2-D array."""
    import time as _time

    import numpy as np

    from corral.datapub import publish_data

    i = 0
    end = _time.monotonic() + seconds
    while _time.monotonic() < end:
        publish_data({"i": i, "line": np.arange(50.0) * i, "field": np.full((8, 8), float(i))})
        i += 1
        _time.sleep(0.001)
    publish_data({"i": i, "line": np.arange(50.0) * i, "field": np.full((8, 8), float(i))})
    return i


# -- the live view ------------------------------------------------------------------------

def test_published_values_are_sorted_into_table_plots_and_images():
    import numpy as np

    from corral.widgets.snapshot import classify

    datas = [{"i": 1, "name": "a", "x": np.float32(2), "line": np.arange(3), "img": np.ones((2, 2)),
              "cube": np.ones((2, 2, 2)), "z": np.ones(3, complex), 7: "int key", "mixed": 1},
             {"mixed": np.arange(4)}]
    scalars, lines, images, others = classify(datas)
    assert scalars == ["i", "name", "x", 7]
    assert lines == ["line"] and images == ["img"]
    assert others == ["cube", "z", "mixed"]  # 3-D, complex, and a key of two kinds


def test_many_tasks_show_the_running_ones_first_and_count_the_rest():
    import numpy as np

    from corral.client.progress import Progress
    from corral.widgets.render import MAX_LINES, MAX_ROWS, line_png, table_html, table_text, visible
    from corral.widgets.snapshot import EngineRow, Snapshot

    rows = [EngineRow(i % 4, "running" if i >= 90 else "done", True, 1.0, 1,
                      {"i": i, "y": np.arange(5.0) * i}) for i in range(100)]
    snap = Snapshot("many", rows, Progress(90, 100, "tasks"), False, ["i"], ["y"])
    shown, hidden = visible(snap, MAX_ROWS)
    assert len(shown) == MAX_ROWS and hidden == 100 - MAX_ROWS
    assert [i for i, _ in shown][-10:] == list(range(90, 100))  # every running task
    assert table_html(snap).count("<tr>") == 1 + MAX_ROWS + 1  # header, rows, "and N more"
    assert f"and {100 - MAX_ROWS} more tasks" in table_text(snap)
    assert visible(snap, MAX_LINES, "y")[1] == 100 - MAX_LINES
    assert line_png(snap, "y").startswith(b"\x89PNG")


def test_dataview_throttles_a_1khz_publisher_and_ends_on_the_final_values(client4):
    pytest.importorskip("ipywidgets")
    from corral.widgets import DataView

    dv = client4[:2]
    ar = dv.apply_async(publish_fast, 2.0)
    t0 = time.monotonic()
    view = DataView(ar, max_fps=5)
    assert view.wait(timeout=60), "the view never drew its final frame"
    elapsed = time.monotonic() - t0
    finals = ar.get(timeout=30)
    assert min(finals) > 200, f"the tasks did not publish fast: {finals}"
    # The first frame at creation, then at most max_fps a second (newest wins).
    assert 3 <= view.frames <= 5 * elapsed + 2, (view.frames, elapsed)
    snap = view.last_snapshot
    assert snap.done and [r.task for r in snap.rows] == ["done", "done"]
    assert [r.data["i"] for r in snap.rows] == finals
    assert [r.engine_alive for r in snap.rows] == [True, True]
    # Publications received (at 1 kHz a few may be dropped on the way: at most all of them).
    assert all(0 < r.seq <= f + 1 for r, f in zip(snap.rows, finals))
    assert snap.scalars == ["i"] and snap.lines == ["line"] and snap.images == ["field"]
    for final in finals:
        assert f"<td>{final}</td>" in view._table.value
    assert view._bar.value == view._bar.max and view._bar.bar_style == "success"
    images = list(view._plots.children)
    assert len(images) == 2 and all(bytes(img.value).startswith(b"\x89PNG") for img in images)


def test_dataview_keeps_widget_bytes_under_its_budget(client4):
    pytest.importorskip("ipywidgets")
    from corral.widgets import DataView

    def noisy(seconds):
        import time as _time

        import numpy as np

        from corral.datapub import publish_data

        end = _time.monotonic() + seconds
        while _time.monotonic() < end:
            publish_data({"noise": np.random.rand(64, 64)})
            _time.sleep(0.005)

    ar = client4[:].apply_async(noisy, 2.0)
    t0 = time.monotonic()
    budget = 30_000
    view = DataView(ar, max_fps=50, max_bytes_per_second=budget)
    assert view.wait(timeout=60)
    elapsed = time.monotonic() - t0
    ar.get(timeout=30)
    frame = view.largest_frame
    assert frame > 10_000, "the images are too small to test the byte budget"
    # Each frame's bytes buy it a pause of bytes/budget seconds before the next one.
    assert view.bytes_sent <= budget * elapsed + frame, (view.bytes_sent, elapsed, frame)
    assert view.frames < 50 * elapsed / 3, "the byte budget did not slow the frames"


def test_snapshot_age_grows_while_a_task_is_quiet(client4):
    from corral.widgets.snapshot import SnapshotTaker

    def publish_then_sleep():
        import time as _time

        from corral.datapub import publish_data

        _time.sleep(0.3)  # after the first snapshot: its arrival is seen
        publish_data({"x": 1})
        _time.sleep(2.5)

    ar = client4[0].apply_async(publish_then_sleep)
    taker = SnapshotTaker(ar)
    deadline = time.monotonic() + 30
    snap = taker.take()
    while snap.rows[0].seq == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
        snap = taker.take()
    assert snap.rows[0].task == "running" and snap.rows[0].data == {"x": 1}
    time.sleep(1.0)
    later = taker.take()
    assert later.rows[0].age >= snap.rows[0].age + 0.8
    ar.get(timeout=30)
    assert taker.take().rows[0].task == "done"


# -- the static fallback -----------------------------------------------------------------

def test_display_data_outside_a_kernel_shows_a_static_snapshot(client4, capsys):
    from corral.widgets import StaticDataView, widget_frontend_available

    ar = client4[:2].apply_async(publish_fast, 0.2)
    finals = ar.get(timeout=30)
    assert not widget_frontend_available()  # pytest is no Jupyter kernel
    view = ar.display_data()
    assert isinstance(view, StaticDataView)
    out = capsys.readouterr().out
    assert "publish_fast: finished (2 done); 2/2 tasks done" in out
    for final in finals:
        # The age comes from ar.data_meta (the publication's time), so it is known even
        # though the data arrived before the snapshot looked.
        assert re.search(rf"\bdone\s+yes\s+[\d.]+ s\s+\d+\s+{final}\b", out), out
    html = view.to_html()
    assert html.count('src="data:image/png;base64,') == 2  # the line plot and the images
    assert f"<td>{finals[0]}</td>" in html


def test_without_ipywidgets_display_data_falls_back_and_dataview_says_what_to_install(client4, monkeypatch):
    from corral.widgets import DataView, StaticDataView, widget_frontend_available

    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    ar = client4[0].apply_async(lambda: 1)
    ar.get(timeout=30)
    assert not widget_frontend_available()
    assert isinstance(ar.display_data(), StaticDataView)
    with pytest.raises(ImportError, match=r"pip install 'corral\[widgets\]'"):
        DataView(ar)


def test_snapshot_shows_a_killed_engine_gone_and_its_task_failed(start_cluster):
    import os
    import signal

    from corral.widgets.render import table_html
    from corral.widgets.snapshot import SnapshotTaker

    _, client = start_cluster(2)
    pid = client[1].apply_sync(os.getpid)  # an engine process this test's cluster started

    def publish_then_sleep():
        import time as _time

        from corral.datapub import publish_data

        publish_data({"x": 1})
        _time.sleep(30)

    ar = client[:].apply_async(publish_then_sleep)
    taker = SnapshotTaker(ar)
    deadline = time.monotonic() + 30
    while min(r.seq for r in taker.take().rows) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    snap = taker.take()
    while (client.ids != [0] or snap.rows[1].task != "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
        snap = taker.take()
    assert [r.engine_alive for r in snap.rows] == [True, False]
    assert [r.task for r in snap.rows] == ["running", "failed"]
    assert '<span class="gone">gone</span>' in table_html(snap)
    client.abort(ar.msg_ids, block=False)
    client.send_signal("SIGINT", targets=[0], block=True)  # end the sleep on engine 0
    ar.wait(30)


def test_data_stays_final_with_several_threads_reading_it(start_cluster):
    """A view's thread and the user read ``ar.data`` at once: neither may merge an older
    update after a newer one (before the client serialized merges, the final values were
    stale in about 1 trial in 4 here)."""
    import threading

    def publish_flat_out(seconds):
        import time as _time

        from corral.datapub import publish_data

        k, end = 0, _time.monotonic() + seconds
        while _time.monotonic() < end:
            publish_data({"k": k, "pad": "x" * 2000})
            k += 1
        publish_data({"k": k, "pad": "x" * 2000})
        return k

    _, client = start_cluster(2)
    for _ in range(6):
        ar = client[:].apply_async(publish_flat_out, 0.7)
        stop = threading.Event()

        def read(ar=ar, stop=stop):
            while not stop.is_set():
                ar.data

        readers = [threading.Thread(target=read) for _ in range(3)]
        for t in readers:
            t.start()
        try:
            finals = ar.get(timeout=60)
        finally:
            stop.set()
            for t in readers:
                t.join(timeout=30)
        assert [d["k"] for d in ar.data] == finals


def test_snapshot_prefers_the_clients_data_meta_when_it_has_one(client4, monkeypatch):
    """A client with ``ar.data_meta`` (per task: seq, age, alive, from the controller's
    store) gives the view ages it could not see itself."""
    from corral.widgets.snapshot import SnapshotTaker

    ar = client4[:2].apply_async(publish_fast, 0.1)
    ar.get(timeout=30)
    plain = SnapshotTaker(ar).take()
    # corral's client has data_meta: ages are known although the data came before the look.
    assert all(isinstance(r.age, float) and r.age >= 0 for r in plain.rows)
    # What the view shows is what data_meta says.
    meta = [{"seq": 7, "age": 12.5, "alive": True}, {"seq": 9, "age": 3.0, "alive": False}]
    monkeypatch.setattr(type(ar), "data_meta", property(lambda self: meta))
    snap = SnapshotTaker(ar).take()
    assert [(r.seq, r.age, r.engine_alive) for r in snap.rows] == [(7, 12.5, True), (9, 3.0, False)]
