"""Drawing `corral watch` frames: rich renderables for a terminal, plain lines otherwise
(a pipe, a log file, or no rich installed). rich is imported only for the former."""

from __future__ import annotations

from corral.watch.model import ArraySummary, ClusterFrame, TaskFrame, TaskRow

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    """A 1-D array as block characters, resampled to at most ``width`` of them."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [values[int(i * step)] for i in range(width)]
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or 1.0
    return "".join(" " if v not in finite else SPARKS[int((v - lo) / span * (len(SPARKS) - 1))]
                   for v in values)


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def fmt_age(age: float | None) -> str:
    return "-" if age is None else f"{age:.1f}s"


def fmt_alive(alive: bool | None) -> str:
    return "?" if alive is None else ("yes" if alive else "DEAD")


def fmt_array(a: ArraySummary) -> str:
    stats = ("" if a.min is None
             else f" min={fmt(a.min)} mean={fmt(a.mean)} max={fmt(a.max)}")
    return f"shape={a.shape} dtype={a.dtype}{stats}"


def _engine(row: TaskRow) -> str:
    return "-" if row.engine_id is None else str(row.engine_id)


def state_text(frame: TaskFrame) -> str:
    if not frame.done:
        return "pending"  # queued or running: a foreign task's start is not reported
    return "failed" if frame.errors else "done"


def error_lines(frame: TaskFrame) -> list[str]:
    lines = []
    for e in frame.errors:
        lines += e.render_traceback()
    return lines


# -- plain lines ------------------------------------------------------------------------

def task_lines(frame: TaskFrame) -> list[str]:
    """One line per task (scalars inline), one per array; the state and any error."""
    lines = []
    for row in frame.rows:
        scalars = " ".join(f"{k}={fmt(v)}" for k, v in row.scalars.items())
        others = " ".join(f"{k}=<{v}>" for k, v in row.others.items())
        lines.append(f"engine {_engine(row)} seq={row.seq if row.seq is not None else '-'} "
                     f"age={fmt_age(row.age)} alive={fmt_alive(row.alive)}"
                     + (f" {scalars}" if scalars else "") + (f" {others}" if others else ""))
        for key, a in row.arrays.items():
            spark = f" {sparkline(a.values)}" if a.values is not None else ""
            lines.append(f"  {key}: {fmt_array(a)}{spark}")
    if frame.done:
        lines.append(f"task {state_text(frame)}")
        lines += error_lines(frame)
    return lines


def cluster_lines(frame: ClusterFrame) -> list[str]:
    lines = [f"engine {e.engine_id} alive={fmt_alive(e.alive)} queue={e.queue} "
             f"tasks={e.tasks} completed={e.completed}"
             + (f" running={','.join(e.running)}" if e.running else "")
             for e in frame.engines]
    lines.append(f"unassigned={frame.unassigned}")
    return lines


# -- rich -------------------------------------------------------------------------------

def task_view(frame: TaskFrame, title: str):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    keys: list[str] = []
    for row in frame.rows:
        keys += [k for k in [*row.scalars, *row.others] if k not in keys]
    table = Table()
    for column in ("engine", "alive", "age", "seq", *keys):
        table.add_column(column)
    for row in frame.rows:
        values = {**row.scalars, **{k: f"<{v}>" for k, v in row.others.items()}}
        alive = Text(fmt_alive(row.alive), style="red" if row.alive is False else "")
        table.add_row(_engine(row), alive, fmt_age(row.age),
                      "-" if row.seq is None else str(row.seq),
                      *(fmt(values[k]) if k in values else "" for k in keys))
    parts: list = [Text(f"{title} — {state_text(frame)}", style="bold"), table]
    arrays = [(row, key, a) for row in frame.rows for key, a in row.arrays.items()]
    if arrays:
        grid = Table(show_header=True, box=None)
        for column in ("engine", "array", "shape", "dtype", "min", "mean", "max", ""):
            grid.add_column(column)
        for row, key, a in arrays:
            grid.add_row(_engine(row), key, str(a.shape), a.dtype,
                         *("-" if v is None else fmt(v) for v in (a.min, a.mean, a.max)),
                         Text(sparkline(a.values), style="cyan") if a.values is not None else "")
        parts.append(grid)
    if frame.done and frame.errors:
        parts.append(Text("\n".join(error_lines(frame)), style="red"))
    return Group(*parts)


def cluster_view(frame: ClusterFrame, title: str):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    heading = Text(f"{title} — {len(frame.engines)} engines, "
                   f"{frame.unassigned} unassigned tasks", style="bold")
    table = Table()
    for column in ("engine", "alive", "queue", "tasks", "completed", "running"):
        table.add_column(column)
    for e in frame.engines:
        table.add_row(str(e.engine_id),
                      Text(fmt_alive(e.alive), style="" if e.alive else "red"),
                      str(e.queue), str(e.tasks), str(e.completed), "\n".join(e.running))
    return Group(heading, table)
