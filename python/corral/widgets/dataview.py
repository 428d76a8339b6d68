"""``DataView``: a live notebook widget of the data an ``AsyncResult``'s tasks publish.

A background thread sleeps in the client's ``_wait_data`` (woken by the Rust I/O thread
on each batch of publications, or once a second to age the snapshots) and redraws.
Frames are throttled: at most ``max_fps`` a second and at most ``max_bytes_per_second``
of widget updates on average, so Jupyter's IOPub data-rate limit (1 MB/s by default) is
never hit however fast tasks publish. A frame always reads the newest data, so whatever
was published between two frames is skipped, never queued. The last frame is drawn
once every task is done; then the thread ends.
"""

from __future__ import annotations

import threading
import time

from corral.widgets.render import (draw_safely, header_text, image_png, line_png, table_html,
                                   table_text)
from corral.widgets.showing import ShownOncePerCell
from corral.widgets.snapshot import Snapshot, SnapshotTaker

__all__ = ["DataView"]

# With nothing published, the view still redraws this often, so ages and liveness move.
REFRESH_SECONDS = 1.0
# What one widget update costs on IOPub besides its value (the signed Jupyter envelope,
# headers and comm framing: 657 bytes for a one-character HTML update signed by
# jupyter_client's Session), rounded up and counted toward the byte budget.
MESSAGE_OVERHEAD = 700


def require_ipywidgets():
    try:
        import ipywidgets
    except ImportError:
        raise ImportError("DataView needs ipywidgets: pip install 'corral[widgets]' "
                          "(or use ar.display_data(static=True) for a snapshot)") from None
    return ipywidgets


class DataView(ShownOncePerCell):
    """The live view of ``ar.data``: a progress bar, a table of scalar keys per engine
    (with each engine's snapshot age and liveness), a line plot per 1-D array key and an
    image per 2-D array key. Display it (last expression of a cell, or ``display(view)``);
    it updates until the tasks are done.

    ``frames`` counts the frames drawn, ``bytes_sent`` the IOPub bytes their widget
    updates cost (``largest_frame``: the most in one frame).
    """

    def __init__(self, ar, max_fps: float = 4.0, max_bytes_per_second: float = 500_000):
        widgets = require_ipywidgets()
        if not max_fps > 0:
            raise ValueError(f"max_fps must be a positive number of frames per second, not {max_fps!r}")
        if not max_bytes_per_second > 0:
            raise ValueError("max_bytes_per_second must be positive "
                             f"(Jupyter's IOPub limit is 1e6), not {max_bytes_per_second!r}")
        self.ar = ar
        self.max_fps = float(max_fps)
        self.max_bytes_per_second = float(max_bytes_per_second)
        self.frames = 0
        self.bytes_sent = 0
        self.largest_frame = 0  # bytes
        self.error: BaseException | None = None  # why updating stopped early, if it did
        self.last_snapshot: Snapshot | None = None
        self._widgets = widgets
        self._taker = SnapshotTaker(ar)
        self._header = widgets.HTML()
        self._bar = widgets.FloatProgress(min=0.0, max=1.0, value=0.0, bar_style="info")
        self._bar.add_class("corral-dataview-progress")
        self._bar_text = widgets.Label()
        self._table = widgets.HTML()
        self._plots = widgets.VBox()
        self._images: dict[tuple[str, str], object] = {}
        self._drawn_from: dict[tuple[str, str], tuple] = {}  # what each plot shows
        self.widget = widgets.VBox([self._header, widgets.HBox([self._bar, self._bar_text]),
                                    self._table, self._plots])
        self._draw_lock = threading.Lock()  # one frame at a time
        self._stop = threading.Event()
        self._finished = threading.Event()
        # The first frame now, so the view is never empty when shown.
        first = self._draw()
        self._next_frame = time.monotonic() + max(1 / self.max_fps, first / self.max_bytes_per_second)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"corral-dataview-{ar.msg_ids[0] if ar.msg_ids else ''}")
        self._thread.start()

    # -- showing ---------------------------------------------------------------------

    def _show(self) -> None:
        """The widget, with the current frame as text for frontends without widgets
        (``jupyter console``, a notebook converted to text) instead of ``VBox(...)``."""
        from IPython.display import display

        bundle = self.widget._repr_mimebundle_()
        if self.last_snapshot is not None:
            snap = self.last_snapshot
            bundle["text/plain"] = f"{header_text(snap)}\n{table_text(snap)}"
        display(bundle, raw=True)

    def __repr__(self):
        state = "final" if self._finished.is_set() else "live"
        return f"<DataView of {self._taker.name}: {state}, {self.frames} frames>"

    # -- control ---------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the tasks are done and the final frame is drawn (or updating
        stopped early: see ``error``); True unless ``timeout`` passed first.

        The final frame's state is then sent again from the calling thread: a frontend
        has it already, but a headless runner (nbclient) keeps only the messages of the
        cell it is running, and this puts the final state into the cell that waited."""
        if not self._finished.wait(timeout):
            return False
        with self._draw_lock:
            for w in self._all_widgets():
                w.send_state()
        return True

    def stop(self) -> None:
        """Stop updating (the view keeps its current frame)."""
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    # -- the update loop -------------------------------------------------------------

    def _run(self) -> None:
        seen, next_frame = 0, self._next_frame
        try:
            while not self._stop.is_set():
                received, done = self.ar._client._wait_data(self.ar.msg_ids, seen, REFRESH_SECONDS)
                seen = received
                delay = next_frame - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                # Read the data only now, after the pause: newest wins.
                started = time.monotonic()
                sent = self._draw()
                next_frame = started + max(1 / self.max_fps, sent / self.max_bytes_per_second)
                if done:
                    break
        except Exception as e:  # e.g. ControllerLost: say so on the view, stop updating
            self.error = e
            self._header.value += f" <b>— stopped updating: {type(e).__name__}: {e}</b>"
        finally:
            self._finished.set()

    def _all_widgets(self):
        return [self._header, self._bar, self._bar_text, self._table, self._plots,
                *self._images.values()]

    def _image(self, kind: str, key: str):
        image = self._images.get((kind, key))
        if image is None:
            image = self._widgets.Image(format="png")
            self._images[(kind, key)] = image
        return image

    def _draw(self) -> int:
        """Draw one frame from a fresh snapshot; the bytes of widget state it changed."""
        with self._draw_lock:
            snap = self._taker.take()
            sent = 0

            def put(widget, name, value):
                nonlocal sent
                if getattr(widget, name) != value:
                    setattr(widget, name, value)
                    sent += MESSAGE_OVERHEAD + (len(value) if isinstance(value, (str, bytes)) else 8)

            put(self._header, "value", f"<b>{header_text(snap)}</b>" if not self.error else self._header.value)
            p = snap.progress
            put(self._bar, "max", float(max(p.total, 1e-9)))
            put(self._bar, "value", float(p.done))
            put(self._bar_text, "value", f"{p.done}/{p.total} {p.unit}")
            failed = any(r.task == "failed" for r in snap.rows)
            put(self._bar, "bar_style", "danger" if failed else "success" if snap.done else "info")
            put(self._table, "value", table_html(snap))
            shown = []
            drawn_from = tuple((r.engine_id, r.seq) for r in snap.rows)
            for kind, keys, draw in (("line", snap.lines, line_png), ("image", snap.images, image_png)):
                for key in keys:
                    image = self._image(kind, key)
                    # Redraw a plot only when some engine published since it was drawn.
                    if self._drawn_from.get((kind, key)) != drawn_from:
                        png = draw_safely(draw, snap, key)
                        if png is not None:
                            put(image, "value", png)
                        self._drawn_from[(kind, key)] = drawn_from
                    shown.append(image)
            if list(self._plots.children) != shown:
                self._plots.children = shown
            self.frames += 1
            self.bytes_sent += sent
            self.largest_frame = max(self.largest_frame, sent)
            self.last_snapshot = snap
            return sent
