"""One frame's worth of facts about an ``AsyncResult``: per engine, its latest published
data, how old that is, whether its engine and task are alive; and the overall progress.

Kept apart from drawing so the live widget and the static fallback show the same thing.
Published values are sorted into what each can show: scalars (a table column), 1-D
numeric arrays (a line plot), 2-D numeric arrays (an image), anything else (a short
description in the table).
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field

from corral.client.progress import Progress, summarize

__all__ = ["EngineRow", "Snapshot", "SnapshotTaker", "classify"]


@dataclass
class EngineRow:
    """One task of the result (one engine, for a DirectView)."""

    engine_id: int | None  # None until the task is assigned an engine
    task: str  # "queued", "running", "done", "failed"
    engine_alive: bool | None  # registered with the controller; None while unassigned
    age: float | None  # seconds since the latest publication arrived; None: unknown or none
    seq: int  # publications received
    data: dict


@dataclass
class Snapshot:
    name: str
    rows: list[EngineRow]
    progress: Progress
    done: bool
    scalars: list[str] = field(default_factory=list)  # table columns, first seen first
    lines: list[str] = field(default_factory=list)  # 1-D array keys
    images: list[str] = field(default_factory=list)  # 2-D array keys
    others: list[str] = field(default_factory=list)  # described in the table


def _numpy():
    try:
        import numpy
    except ImportError:  # corral runs without numpy; then nothing is an array
        return None
    return numpy


def kind_of(value) -> str:
    """``"scalar"``, ``"line"`` (1-D numeric array), ``"image"`` (2-D) or ``"other"``."""
    if value is None or isinstance(value, (numbers.Number, str, bytes)):
        return "scalar"
    np = _numpy()
    if np is not None and isinstance(value, (np.ndarray, np.generic)):
        if value.ndim == 0 or isinstance(value, np.generic):
            return "scalar"
        # Real numbers only: complex values have no single line or colour.
        numeric = (np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)
                   or value.dtype == bool)
        if numeric and value.size and value.ndim in (1, 2):
            return "line" if value.ndim == 1 else "image"
    return "other"


def classify(datas) -> tuple[list[str], list[str], list[str], list[str]]:
    """The keys of ``datas`` (dicts) as (scalars, lines, images, others), in the order
    first seen; a key that is of different kinds on different engines is shown in the
    table (``others``) unless all its values are scalars."""
    kinds: dict = {}
    for d in datas:
        for key, value in d.items():
            kinds.setdefault(key, set()).add(kind_of(value))
    groups: dict[str, list] = {"scalar": [], "line": [], "image": [], "other": []}
    for key, found in kinds.items():
        groups[found.pop() if len(found) == 1 else "other"].append(key)
    return groups["scalar"], groups["line"], groups["image"], groups["other"]


def _per_task(meta, n: int) -> list[dict] | None:
    """``ar.data_meta`` (when the client has it) as one dict per task, or None."""
    if isinstance(meta, dict):
        meta = [meta]
    if not isinstance(meta, (list, tuple)) or len(meta) != n:
        return None
    return [m if isinstance(m, dict) else {} for m in meta]


class SnapshotTaker:
    """Takes snapshots of one ``AsyncResult``, remembering when each task's publication
    count last changed: that is the snapshot's age when the client has no ``data_meta``
    (its accuracy is then the time between snapshots, which the live view keeps short;
    data that arrived before the first snapshot has no known age)."""

    def __init__(self, ar, name: str | None = None):
        self.ar = ar
        self.name = name or getattr(ar, "_fname", "tasks")
        self._seen: dict[str, tuple[int, float | None]] = {}  # msg_id -> (seq, when it changed)

    def take(self) -> Snapshot:
        ar, client = self.ar, self.ar._client
        now = time.monotonic()
        try:
            meta = _per_task(getattr(ar, "data_meta", None), len(ar.msg_ids))
        except Exception:  # data_meta is a newer client's; never let it break a frame
            meta = None
        registered = set(client.ids)
        rows = []
        for i, msg_id in enumerate(ar.msg_ids):
            md = client._metadata(msg_id)
            finished = client._core.ready(msg_id)
            seq = int(md.get("data_messages") or 0)
            if msg_id not in self._seen:
                # Arrived before this taker looked, when is unknown (data_meta knows).
                self._seen[msg_id] = (seq, None)
            last_seq, since = self._seen[msg_id]
            if seq != last_seq:
                since = now
                self._seen[msg_id] = (seq, since)
            age = None if since is None else now - since
            engine_id = md.get("engine_id")
            alive = None if engine_id is None else engine_id in registered
            m = meta[i] if meta else {}
            if m.get("seq") is not None:
                seq = int(m["seq"])
            if m.get("age") is not None:
                age = float(m["age"])
            if m.get("alive") is not None:
                alive = bool(m["alive"])
            if finished:
                task = "done" if md.get("status") == "ok" else "failed"
            else:
                task = "running" if client._started(msg_id) else "queued"
            rows.append(EngineRow(engine_id, task, alive, age, seq, dict(md.get("data") or {})))
        progress = summarize([r.data for r in rows], [r.task in ("done", "failed") for r in rows])
        done = all(r.task in ("done", "failed") for r in rows)
        scalars, lines, images, others = classify([r.data for r in rows])
        return Snapshot(self.name, rows, progress, done, scalars, lines, images, others)
