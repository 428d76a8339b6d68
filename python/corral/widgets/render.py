"""Drawing a ``Snapshot``: an HTML table of scalars per engine, and PNG plots (one line
plot per 1-D array key, engines overlaid; one image per engine for each 2-D array key).

Plots use matplotlib's ``Figure`` with the Agg canvas directly, never pyplot: no global
figure state, safe from the widget's background thread, and it does not disturb the
user's own ``%matplotlib`` figures. Plots are small and arrays are thinned before drawing
(at most ``MAX_POINTS`` points per line, ``MAX_PIXELS`` pixels per image side), and many
tasks (a load-balanced map) are shown up to ``MAX_ROWS`` table rows, ``MAX_LINES`` lines and
``MAX_IMAGES`` images, running ones first, so a frame stays a few tens of KB however big
the published arrays are and however many tasks there are.
"""

from __future__ import annotations

import html
import io
import logging

from corral.widgets.snapshot import Snapshot

__all__ = ["draw_safely", "header_text", "table_html", "table_text", "line_png", "image_png",
           "visible"]

log = logging.getLogger(__name__)

MAX_POINTS = 2000
MAX_PIXELS = 256
DPI = 72
MAX_LEGEND = 8  # more engines than this: no legend (it would cover the plot)
MAX_IMAGE_COLUMNS = 4
# Many tasks (a load-balanced map): show this many, running ones first, and count the rest.
MAX_ROWS = 32
MAX_LINES = 16
MAX_IMAGES = 8

_STYLE = ("<style>.corral-dataview td,.corral-dataview th{padding:2px 8px;text-align:right;"
          "font-family:monospace}.corral-dataview .gone{color:#b00}</style>")


def _engine_label(row, index: int) -> str:
    return f"engine {row.engine_id}" if row.engine_id is not None else f"task {index}"


def _short(value, limit: int = 40) -> str:
    """A table cell's text: scalars as themselves, arrays and containers described."""
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None and shape != ():
        text = f"array{tuple(shape)} {dtype}"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (list, tuple, dict, set)):
        text = f"{type(value).__name__}[{len(value)}]"
    else:
        text = str(value.item() if hasattr(value, "item") and shape == () else value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def visible(snap: Snapshot, limit: int, key=None) -> tuple[list, int]:
    """Up to ``limit`` (index, row) pairs of ``snap`` (those with ``key``, if given),
    running tasks first, in task order; and how many were left out."""
    rows = [(i, r) for i, r in enumerate(snap.rows) if key is None or r.data.get(key) is not None]
    if len(rows) <= limit:
        return rows, 0
    chosen = sorted(rows, key=lambda ir: (ir[1].task != "running", ir[0]))[:limit]
    return sorted(chosen, key=lambda ir: ir[0]), len(rows) - limit


def _age(age) -> str:
    if age is None:
        return "–"
    return f"{age:.1f} s" if age < 60 else f"{age / 60:.1f} min"


def header_text(snap: Snapshot) -> str:
    """One line: the name, how many tasks run or are done, the progress."""
    counts: dict[str, int] = {}
    for row in snap.rows:
        counts[row.task] = counts.get(row.task, 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in counts.items())
    p = snap.progress
    state = "finished" if snap.done else "running"
    return f"{snap.name}: {state} ({states}); {p.done}/{p.total} {p.unit} done"


def table_html(snap: Snapshot) -> str:
    """The per-engine table: task state, engine liveness, snapshot age, publications
    received ("updates": an engine may coalesce superseded ones, so it can be fewer than
    were published), then one column per scalar key (and a description of other values)."""
    keys = snap.scalars + snap.others
    head = ["engine", "task", "engine up", "age", "updates"] + keys
    out = [_STYLE, '<table class="corral-dataview"><thead><tr>']
    out += [f"<th>{html.escape(str(h))}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    rows, hidden = visible(snap, MAX_ROWS)
    for i, row in rows:
        up = {True: "yes", False: '<span class="gone">gone</span>', None: "–"}[row.engine_alive]
        cells = [html.escape(str(row.engine_id if row.engine_id is not None else f"({i})")),
                 html.escape(row.task), up, _age(row.age), str(row.seq)]
        cells += [html.escape(_short(row.data[k])) if k in row.data else "" for k in keys]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if hidden:
        out.append(f'<tr><td colspan="{len(head)}">… and {hidden} more tasks</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def draw_safely(draw, snap: Snapshot, key: str) -> bytes | None:
    """``draw(snap, key)``, or None (logged) if matplotlib fails on these values: one
    odd key must not stop the view."""
    try:
        return draw(snap, key)
    except Exception:
        log.warning("could not plot published key %r", key, exc_info=True)
        return None


def line_png(snap: Snapshot, key: str) -> bytes:
    """Every engine's latest ``key`` (a 1-D array) as a line, in one plot."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 2.8), layout="constrained")
    ax = fig.add_subplot()
    rows, hidden = visible(snap, MAX_LINES, key)
    drawn = 0
    for i, row in rows:
        y = np.asarray(row.data[key])
        step = max(1, len(y) // MAX_POINTS)
        ax.plot(np.arange(0, len(y), step), y[::step], label=_engine_label(row, i))
        drawn += 1
    ax.set_title(str(key) + (f" ({hidden} more tasks not shown)" if hidden else ""))
    if 1 < drawn <= MAX_LEGEND:
        ax.legend(fontsize="small", loc="upper right")
    return _png(fig)


def image_png(snap: Snapshot, key: str) -> bytes:
    """Every engine's latest ``key`` (a 2-D array) as an image, side by side."""
    import numpy as np
    from matplotlib.figure import Figure

    shown, hidden = visible(snap, MAX_IMAGES, key)
    cols = min(len(shown), MAX_IMAGE_COLUMNS) or 1
    nrows = -(-len(shown) // cols) or 1
    fig = Figure(figsize=(2.4 * cols, 2.4 * nrows + 0.3), layout="constrained")
    fig.suptitle(str(key) + (f" ({hidden} more tasks not shown)" if hidden else ""))
    for n, (i, row) in enumerate(shown):
        z = np.asarray(row.data[key])
        step = max(1, max(z.shape) // MAX_PIXELS)
        ax = fig.add_subplot(nrows, cols, n + 1)
        ax.imshow(z[::step, ::step].astype(float), aspect="auto", interpolation="nearest")
        ax.set_title(_engine_label(row, i), fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
    return _png(fig)


def table_text(snap: Snapshot) -> str:
    """The table of ``table_html`` as plain text, for terminals and logs."""
    keys = snap.scalars + snap.others
    head = ["engine", "task", "engine up", "age", "updates"] + [str(k) for k in keys]
    rows = [head]
    shown, hidden = visible(snap, MAX_ROWS)
    for i, row in shown:
        up = {True: "yes", False: "gone", None: "-"}[row.engine_alive]
        rows.append([str(row.engine_id if row.engine_id is not None else f"({i})"), row.task, up,
                     _age(row.age).replace("–", "-"), str(row.seq)]
                    + [_short(row.data[k]) if k in row.data else "" for k in keys])
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in rows]
    return "\n".join(lines + ([f"... and {hidden} more tasks"] if hidden else []))
