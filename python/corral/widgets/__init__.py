"""Live views of the data tasks publish (``publish_data``), in a notebook.

``ar.display_data()`` shows a ``DataView`` (a live ipywidgets view) where a widget
frontend can exist, else a ``StaticDataView`` (one snapshot). The rule
(``widget_frontend_available``): live when ipywidgets imports and the code runs in a
Jupyter kernel (IPython's shell has a ``kernel``, as in JupyterLab, Notebook, VS Code);
static in a terminal IPython, a script, or without ipywidgets. A kernel cannot tell
whether its frontend renders widgets (``jupyter console`` does not): pass
``static=True`` there.
"""

from __future__ import annotations

from corral.widgets.dataview import DataView
from corral.widgets.static import StaticDataView

__all__ = ["DataView", "StaticDataView", "display_data", "widget_frontend_available"]


def widget_frontend_available() -> bool:
    """Whether a live widget can be shown here (see the module docs for the rule)."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def display_data(ar, max_fps: float = 4.0, static: bool | None = None):
    """Show ``ar``'s published data: live (``DataView``) or as a snapshot
    (``StaticDataView``; ``static=None`` chooses by ``widget_frontend_available``).
    Returns the view shown."""
    from IPython.display import display

    if static is None:
        static = not widget_frontend_available()
    view = StaticDataView(ar) if static else DataView(ar, max_fps=max_fps)
    display(view)
    return view
