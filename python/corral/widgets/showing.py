"""Showing a view at most once per notebook cell.

``ar.display_data()`` shows its view and returns it (so ``view = ar.display_data()``
keeps a handle); when that call is a cell's last line, IPython shows the returned view
again. Views remember the cell (IPython's execution count) they were shown in and skip
the second showing; shown from a later cell, they appear again.
"""

from __future__ import annotations

__all__ = ["ShownOncePerCell"]


class ShownOncePerCell:
    _shown_in: int | None = None

    def _show(self) -> None:  # pragma: no cover - each view defines it
        raise NotImplementedError

    def _ipython_display_(self) -> None:
        from IPython import get_ipython

        count = getattr(get_ipython(), "execution_count", None)
        if count is not None and count == self._shown_in:
            return
        self._shown_in = count
        self._show()
