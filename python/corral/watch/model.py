"""What `corral watch` shows, read through a ``Client``: one frame per refresh.

Kept apart from drawing so the rich view, the plain lines and ``--once`` show the same
facts. Values are sorted with ``corral.widgets.snapshot.kind_of``, as the notebook widget
sorts them: scalars go in the table, arrays are summarized.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral import error
from corral.widgets.snapshot import kind_of

__all__ = ["ArraySummary", "ClusterFrame", "EngineLine", "TaskFrame", "TaskRow",
           "UnknownTask", "cluster_frame", "summarize_array", "task_frame"]


class UnknownTask(LookupError):
    """The controller has no record of the msg_id."""


@dataclass
class ArraySummary:
    shape: tuple
    dtype: str
    min: float | None
    mean: float | None
    max: float | None
    values: list[float] | None  # a 1-D array's values (for its sparkline), else None


@dataclass
class TaskRow:
    """One task: the engine it runs on and its latest published data."""

    msg_id: str
    engine_id: int | None
    alive: bool | None
    age: float | None  # seconds since its latest snapshot was published
    seq: int | None  # publications recorded by the controller
    scalars: dict
    arrays: dict[str, ArraySummary]
    others: dict[str, str]  # neither scalar nor numeric array: a short description


@dataclass
class TaskFrame:
    rows: list[TaskRow]
    done: bool
    errors: list[error.RemoteError] = field(default_factory=list)
    results: list = field(default_factory=list)  # once done without error

    def changed_since(self, other: TaskFrame | None) -> bool:
        """Whether new data or a new state arrived (ages alone do not count)."""
        if other is None:
            return True
        return self.done != other.done or _facts(self) != _facts(other)


def _facts(frame: TaskFrame) -> list:
    # repr, not the values: NaN != NaN would count as a change on every refresh.
    return [repr((r.seq, r.engine_id, r.alive, r.scalars, r.others,
                  sorted((k, a.shape, a.min, a.mean, a.max) for k, a in r.arrays.items())))
            for r in frame.rows]


def summarize_array(value) -> ArraySummary:
    import numpy as np

    arr = np.asarray(value)
    lo = mean = hi = None
    if arr.size:
        as_float = arr.astype(float)
        lo, mean, hi = float(as_float.min()), float(as_float.mean()), float(as_float.max())
    values = arr.astype(float).tolist() if arr.ndim == 1 else None
    return ArraySummary(tuple(arr.shape), str(arr.dtype), lo, mean, hi, values)


def describe(value) -> str:
    shape = getattr(value, "shape", None)
    text = f"{type(value).__name__}" + (f" shape {tuple(shape)}" if shape is not None else "")
    if isinstance(value, (list, tuple, dict, set)):
        text += f" of {len(value)}"
    return text


def check_known(client, msg_ids: list[str]) -> None:
    """Raise ``UnknownTask`` naming the msg_ids the controller has no record of."""
    try:
        client.result_status(msg_ids, status_only=True)
    except error.RemoteError as e:
        # The controller names the first unknown msg_id in its error (KeyError).
        raise UnknownTask(f"no task with msg_id {', '.join(msg_ids)} is known to this "
                          f"controller ({e.ename}: {e.evalue}); `corral watch --cluster` "
                          "lists running tasks") from None


def _row(msg_id: str, data: dict, meta: dict) -> TaskRow:
    scalars, arrays, others = {}, {}, {}
    for key, value in data.items():
        kind = kind_of(value)
        if kind == "scalar":
            scalars[key] = value
        elif kind in ("line", "image"):
            arrays[key] = summarize_array(value)
        else:
            others[key] = describe(value)
    return TaskRow(msg_id, meta.get("engine_id"), meta.get("alive"), meta.get("age"),
                   meta.get("seq"), scalars, arrays, others)


def task_frame(ar) -> TaskFrame:
    """The current state of an ``AsyncHubResult``: data per task, its engine's age and
    liveness (``data_meta``), and, once done, the results or the errors."""
    done = ar.ready()
    datas = ar.data
    metas = ar.data_meta
    if len(ar.msg_ids) == 1:
        datas, metas = [datas], [metas]
    rows = [_row(m, dict(d or {}), dict(md or {})) for m, d, md in zip(ar.msg_ids, datas, metas)]
    frame = TaskFrame(rows, done)
    if done:
        results = ar.get(return_exceptions=True)
        if len(ar.msg_ids) == 1:
            results = [results]
        frame.errors = [r for r in results if isinstance(r, error.RemoteError)]
        frame.results = [] if frame.errors else results
    return frame


@dataclass
class EngineLine:
    engine_id: int
    alive: bool
    queue: int  # direct-view requests waiting or running
    tasks: int  # load-balanced tasks assigned
    completed: int
    running: list[str]  # msg_ids outstanding on the engine


@dataclass
class ClusterFrame:
    engines: list[EngineLine]
    unassigned: int


def _count(value) -> int:
    return len(value) if isinstance(value, (list, tuple)) else int(value or 0)


def cluster_frame(client) -> ClusterFrame:
    """Engines (live ones from registration notifications, with their queues from
    ``queue_status``) and the tasks outstanding on each."""
    status = client.queue_status(verbose=True)
    live = set(client.ids)
    engines = []
    for engine_id in sorted(set(k for k in status if isinstance(k, int)) | live):
        s = status.get(engine_id) or {}
        running = [m for key in ("queue", "tasks") for m in (s.get(key) or [])
                   if isinstance(s.get(key), list)]
        engines.append(EngineLine(engine_id, engine_id in live, _count(s.get("queue")),
                                  _count(s.get("tasks")), _count(s.get("completed")),
                                  running))
    return ClusterFrame(engines, _count(status.get("unassigned")))
