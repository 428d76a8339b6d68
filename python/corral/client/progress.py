"""The progress convention: how far along an ``AsyncResult``'s tasks are.

A task that publishes ``{'progress': k, 'total': n}`` (``publish_data``) is counted in
*items*: k of its n are done. Progress bars (``wait_interactive``, ``%px
--progress-after``, ``DataView``) then sum over the engines, so 4 engines with 100 items
each show ``0..400 items`` instead of ``0..4 tasks``. Without such keys, tasks are
counted, as ipyparallel does.

Rules, once any task has published a ``total``:
- a finished task counts as complete (its ``total``), whatever it last published;
- a task that has not published a ``total`` (yet) counts as one item, done when finished;
- ``progress`` is clamped to ``0..total``; non-numeric values are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Progress", "progress_of", "summarize"]


@dataclass(frozen=True)
class Progress:
    done: float
    total: float
    unit: str  # "tasks" or "items"

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


def _reported(d) -> tuple[float, float] | None:
    """The ``(progress, total)`` a task's published data carries, or None."""
    if not isinstance(d, dict) or "total" not in d or "progress" not in d:
        return None
    try:
        total, done = float(d["total"]), float(d["progress"])
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(total) and math.isfinite(done)) or total < 0:
        return None
    return min(max(done, 0.0), total), total


def _tidy(x: float):
    """Whole numbers as ints, so bars read ``120/400``, not ``120.0/400.0``."""
    return int(x) if float(x).is_integer() else x


def summarize(datas, finished) -> Progress:
    """Progress of tasks whose latest published dicts are ``datas`` and whose completion
    flags are ``finished`` (one of each per task)."""
    reports = [_reported(d) for d in datas]
    if not any(r is not None for r in reports):
        return Progress(sum(1 for f in finished if f), len(reports), "tasks")
    done = total = 0.0
    for report, is_finished in zip(reports, finished):
        done_i, total_i = report if report is not None else (0.0, 1.0)
        total += total_i
        done += total_i if is_finished else done_i
    return Progress(_tidy(done), _tidy(total), "items")


def progress_of(ar) -> Progress:
    """``ar``'s progress under the convention above (reads ``ar.data``)."""
    finished = [ar._client._core.ready(m) for m in ar.msg_ids]
    try:
        data = ar.data
    except Exception:  # undecodable data: reading ar.data says why; bars count tasks
        return summarize([{}] * len(finished), finished)
    datas = [data] if ar._single_result else list(data)
    return summarize(datas, finished)
