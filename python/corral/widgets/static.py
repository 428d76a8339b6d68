"""``StaticDataView``: one snapshot of an ``AsyncResult``'s published data, for where no
widget frontend exists (a terminal, a script, no ipywidgets). Shown through IPython's
display system: an HTML table with the plots inlined as PNG where HTML is rendered, a
text table elsewhere. It never updates; show it again for a newer snapshot."""

from __future__ import annotations

import base64
import html

from corral.widgets.render import (draw_safely, header_text, image_png, line_png, table_html,
                                   table_text)
from corral.widgets.showing import ShownOncePerCell
from corral.widgets.snapshot import SnapshotTaker

__all__ = ["StaticDataView"]


class StaticDataView(ShownOncePerCell):
    def __init__(self, ar):
        self.snapshot = SnapshotTaker(ar).take()

    def plots(self) -> list[tuple[str, bytes]]:
        """(key, PNG bytes) of each plot: a line plot per 1-D key, images per 2-D key."""
        snap = self.snapshot
        try:
            import matplotlib  # noqa: F401
        except ImportError:  # the table still shows; plots need the widgets extra
            return []
        drawn = [(k, draw_safely(line_png, snap, k)) for k in snap.lines]
        drawn += [(k, draw_safely(image_png, snap, k)) for k in snap.images]
        return [(k, png) for k, png in drawn if png is not None]

    def _show(self) -> None:
        from IPython.display import display

        display({"text/html": self.to_html(), "text/plain": repr(self)}, raw=True)

    def to_html(self) -> str:
        parts = [f"<p><b>{html.escape(header_text(self.snapshot))}</b></p>",
                 table_html(self.snapshot)]
        for key, png in self.plots():
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<div><img alt="{html.escape(str(key))}" src="data:image/png;base64,{data}"/></div>')
        return "".join(parts)

    def __repr__(self) -> str:
        snap = self.snapshot
        plotted = snap.lines + snap.images
        tail = f"\n(plotted where HTML is shown: {', '.join(map(str, plotted))})" if plotted else ""
        return f"{header_text(snap)}\n{table_text(snap)}{tail}"
