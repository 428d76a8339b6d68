"""Showing a running or finished ``AsyncResult`` to a person: a progress line while
waiting (``wait_interactive``) and the engines' captured output afterwards
(``display_outputs``), in ipyparallel's ``[stdout:<engine>]`` format."""

from __future__ import annotations

import sys
import time

__all__ = ["display_outputs", "wait_interactive"]


class _TextProgress:
    """A one-line, carriage-return progress display for when tqdm is not installed."""

    def __init__(self, total: int, desc: str, file):
        self.total, self.desc, self.file, self.n = total, desc, file, 0
        self._t0 = time.monotonic()

    def update(self, k: int) -> None:
        self.n += k
        self._draw()

    def _draw(self, end="") -> None:
        elapsed = time.monotonic() - self._t0
        self.file.write(f"\r{self.desc}: {self.n}/{self.total} tasks finished "
                        f"after {elapsed:4.0f} s{end}")
        self.file.flush()

    def close(self) -> None:
        self._draw(end="\n")


def _progress_bar(total: int, desc: str, file):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _TextProgress(total, desc, file)
    return tqdm(total=total, desc=desc, unit="tasks", file=file)


def wait_interactive(ar, interval=0.1, timeout=-1, file=None) -> None:
    """Wait for ``ar``, redrawing its progress every ``interval`` seconds; returns when it
    is done or after ``timeout`` seconds (None or negative: no limit), like ipyparallel,
    which leaves raising to ``get()``."""
    if timeout is not None and timeout < 0:
        timeout = None
    file = sys.stdout if file is None else file
    bar = _progress_bar(len(ar), ar._fname, file)
    t0 = time.monotonic()
    try:
        done = ar.ready()
        while not done and (timeout is None or time.monotonic() - t0 < timeout):
            step = interval if timeout is None else min(interval, max(timeout - (time.monotonic() - t0), 0))
            done = ar.wait(step)
            bar.update(ar.progress - bar.n)
        bar.update(ar.progress - bar.n)
    finally:
        bar.close()


class _Streams:
    """Writes chunks of output under ``[stdout:<id>]`` headers, repeating a header only
    when the stream or engine changes (ipyparallel's ``_display_stream``)."""

    def __init__(self):
        self.last_prefix = None
        self.trailing_newline = True

    def show(self, text: str, prefix: str, file) -> None:
        if not text:
            return
        head = ""
        if prefix and prefix != self.last_prefix:
            self.last_prefix = prefix
            head = ("" if self.trailing_newline else "\n") + prefix + "\n"
        self.trailing_newline = text.endswith("\n")
        file.write(head + text)


def display_outputs(ar, groupby="type") -> None:
    """Print each engine's stdout (to stdout) and stderr (to stderr): grouped by stream
    (``groupby="type"``) or by engine (``"engine"``). A single-engine result prints
    without headers, as in ipyparallel."""
    if not ar.ready():
        raise RuntimeError(f"{ar!r} is not ready yet")
    streams = _Streams()
    if ar._single_result:
        streams.show(ar.stdout, "", sys.stdout)
        streams.show(ar.stderr, "", sys.stderr)
        return
    rows = [(md["engine_id"], md["stdout"], md["stderr"]) for md in ar._metadata_list()]
    if groupby == "engine":
        for eid, out, err in rows:
            streams.show(out, f"[stdout:{eid}] ", sys.stdout)
            streams.show(err, f"[stderr:{eid}] ", sys.stderr)
    elif groupby in ("type", "order"):
        for eid, out, _ in rows:
            streams.show(out, f"[stdout:{eid}] ", sys.stdout)
        for eid, _, err in rows:
            streams.show(err, f"[stderr:{eid}] ", sys.stderr)
    else:
        raise ValueError(f"groupby must be one of 'type', 'engine', 'order', not {groupby!r}")
