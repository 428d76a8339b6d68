"""``ExecuteReply``: what ``get()`` returns for an ``execute`` (ipyparallel's class).

It wraps one engine's finished ``execute_request``: ``execution_count``, and the task's
metadata (``execute_result``, ``outputs``, ``stdout``, ``engine_id``, ...) as attributes
and keys. Shown in IPython it looks like the engine's ``Out`` prompt, ``Out[2:5]: 42``
(engine 2, its 5th execution), and rich results (HTML, images) render as themselves.
IPython is imported only when something is displayed, so the client works without it.
"""

from __future__ import annotations

__all__ = ["ExecuteReply"]

_RED, _NORMAL = "\x1b[0;31m", "\x1b[0m"


def _use_color() -> bool:
    """Color the ``Out[e:n]:`` prompt as IPython colors its own, unless told not to."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and str(getattr(ip, "colors", "nocolor")).lower() != "nocolor"


class ExecuteReply:
    """One engine's reply to ``execute``. ``reply.execute_result`` is the raw
    ``execute_result`` content (None without a final expression), ``reply['stdout']`` the
    engine's output, and so on for every metadata key."""

    def __init__(self, msg_id: str, content: dict, metadata: dict):
        self.msg_id = msg_id
        self._content = content
        self.execution_count = content.get("execution_count")
        self.metadata = metadata

    # -- the engine's Out[] value, as MIME data ------------------------------------------

    @property
    def _result(self) -> dict:
        return self.metadata.get("execute_result") or {}

    @property
    def data(self) -> dict:
        """The result's MIME bundle (``{'text/plain': '42', ...}``), empty without one."""
        return self._result.get("data") or {}

    @property
    def source(self):
        return self._result.get("source", "")

    def _plaintext(self) -> str:
        """``Out[engine:count]: text``, with a newline first for a multi-line text."""
        text = self.data.get("text/plain", "")
        if not text:
            return ""
        if "\n" in text and not text.startswith("\n"):
            text = "\n" + text
        prompt = f"Out[{self.metadata.get('engine_id')}:{self.execution_count}]: "
        if _use_color():
            prompt = _RED + prompt + _NORMAL
        return prompt + text

    def _repr_mime_(self, mime: str):
        if mime not in self.data:
            return None
        md = (self._result.get("metadata") or {}).get(mime)
        return (self.data[mime], md) if md is not None else self.data[mime]

    def _repr_mimebundle_(self, include=None, exclude=None):
        data = dict(self.data)
        if "text/plain" in data:
            data["text/plain"] = self._plaintext()
        return data, dict(self._result.get("metadata") or {})

    def _repr_pretty_(self, p, cycle):
        p.text(self._plaintext())

    def _repr_html_(self):
        return self._repr_mime_("text/html")

    def _repr_latex_(self):
        return self._repr_mime_("text/latex")

    def _repr_json_(self):
        return self._repr_mime_("application/json")

    def _repr_javascript_(self):
        return self._repr_mime_("application/javascript")

    def _repr_png_(self):
        return self._repr_mime_("image/png")

    def _repr_jpeg_(self):
        return self._repr_mime_("image/jpeg")

    def _repr_svg_(self):
        return self._repr_mime_("image/svg+xml")

    def display(self):
        """Publish the result's MIME bundle to IPython's display (a notebook cell)."""
        from IPython.display import publish_display_data

        publish_display_data(self.data, self._result.get("metadata") or {})

    # -- metadata as keys and attributes -------------------------------------------------

    def __getitem__(self, key):
        return self.metadata[key]

    def __getattr__(self, key):
        if key.startswith("__") or key in ("metadata", "_content"):
            raise AttributeError(key)
        try:
            return self.metadata[key]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {key!r}") from None

    def __repr__(self):
        text = self.data.get("text/plain", "")
        if len(text) > 32:
            text = text[:29] + "..."
        return f"<ExecuteReply[{self.execution_count}]: {text}>"
