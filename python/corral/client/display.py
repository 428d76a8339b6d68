"""Showing a running or finished ``AsyncResult`` to a person: a progress line while
waiting (``wait_interactive``) and the engines' captured output afterwards
(``display_outputs``, rendered by ``corral.client.outputs``). Progress counts tasks, or
published items when tasks publish ``{'progress': k, 'total': n}`` (``progress.py``)."""

from __future__ import annotations

import sys
import time

from corral.client.outputs import display_outputs
from corral.client.progress import progress_of

__all__ = ["display_outputs", "wait_interactive"]


class _TextProgress:
    """A one-line, carriage-return progress display for when tqdm is not installed."""

    def __init__(self, total: int, desc: str, file, unit="tasks"):
        self.total, self.desc, self.file, self.n, self.unit = total, desc, file, 0, unit
        self._t0 = time.monotonic()

    def update(self, k: int) -> None:
        self.n += k
        self._draw()

    def reset(self, total=None) -> None:
        """As tqdm's: start counting again from 0, out of ``total``."""
        self.n = 0
        if total is not None:
            self.total = total

    def _draw(self, end="") -> None:
        elapsed = time.monotonic() - self._t0
        verb = "finished" if self.unit == "tasks" else "done"
        self.file.write(f"\r{self.desc}: {self.n}/{self.total} {self.unit} {verb} "
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


def update_progress(bar, ar) -> None:
    """Move ``bar`` (tqdm's or ours) to ``ar``'s progress; when tasks start publishing
    ``total``s, it switches from counting tasks to counting their items."""
    p = progress_of(ar)
    if p.unit != bar.unit or p.total != bar.total:
        bar.reset(total=p.total)
        bar.unit = p.unit
    bar.update(p.done - bar.n)


def wait_interactive(ar, interval=0.1, timeout=-1, file=None, return_when=None) -> None:
    """Wait for ``ar``, redrawing its progress every ``interval`` seconds; returns when it
    is done (or ``return_when``, a ``concurrent.futures`` constant, says to stop sooner) or
    after ``timeout`` seconds (None or negative: no limit), like ipyparallel, which leaves
    raising to ``get()``."""
    if timeout is not None and timeout < 0:
        timeout = None
    file = sys.stdout if file is None else file
    bar = _progress_bar(len(ar), ar._fname, file)
    t0 = time.monotonic()
    try:
        done = ar.ready()
        while not done and (timeout is None or time.monotonic() - t0 < timeout):
            step = interval if timeout is None else min(interval, max(timeout - (time.monotonic() - t0), 0))
            if return_when is None or return_when == "ALL_COMPLETED":
                done = ar.wait(step)
            else:
                done = _stop_early(ar, step, return_when)
            update_progress(bar, ar)
        update_progress(bar, ar)
    finally:
        bar.close()


def _stop_early(ar, step: float, return_when: str) -> bool:
    """Whether, after waiting up to ``step`` s, ``return_when`` says the wait is over."""
    done, pending = ar.wait(step, return_when=return_when)
    if not pending:
        return True
    if return_when == "FIRST_COMPLETED":
        return bool(done)
    return any(task.exception() is not None for task in done)  # FIRST_EXCEPTION
