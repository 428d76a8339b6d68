"""Showing what engines printed and displayed, as ipyparallel shows it.

Two ways, one format: ``display_outputs`` redraws a task's captured output once it is done
(``ar.display_outputs()``, ``%%px --no-stream``), and ``LiveOutput`` shows it while it
arrives (``%%px --stream``). Text goes under ``[stdout:<engine>]``/``[stderr:<engine>]``
headers, rich output (HTML, figures) under ``[output:<engine>]`` through IPython's display
machinery, and the value of the cell's last expression as ``Out[<engine>:<count>]:``.
Rich output needs IPython (a notebook or terminal): outside it only text is shown.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading

from corral import error
from corral.client.execute_reply import ExecuteReply

__all__ = ["GROUPBY", "LiveOutput", "StreamWriter", "display_outputs", "render_outputs",
           "stream_output"]

#: ``groupby`` choices: all engines' text, then their rich outputs ('type'); each
#: engine's output together ('engine'); like 'type', but the n-th rich output of every
#: engine together ('order', for cells that draw several figures each).
GROUPBY = ("type", "engine", "order")


def _shell():
    """The running IPython shell, or None (IPython not imported means none runs)."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


class StreamWriter:
    """Writes chunks of text under ``[stdout:<id>]`` headers, repeating a header only when
    the stream or engine changes, and never leaving a blank line between chunks."""

    def __init__(self):
        self.last_prefix = None
        self.trailing_newline = True

    def write(self, text: str, prefix: str, file) -> None:
        if not text:
            return
        head = ""
        if prefix and prefix != self.last_prefix:
            self.last_prefix = prefix
            head = ("" if self.trailing_newline else "\n") + prefix + "\n"
        self.trailing_newline = text.endswith("\n")
        file.write(head + text)
        file.flush()


def _header(engine_id) -> None:
    from IPython.display import display_pretty

    display_pretty(f"[output:{engine_id}]", raw=True)


def _republish(content: dict, engine_id) -> None:
    """An engine's ``display_data``, shown here, tagged with the engine it came from."""
    from IPython.display import publish_display_data

    metadata = dict(content.get("metadata") or {})
    metadata["engine"] = engine_id
    publish_display_data(content.get("data") or {}, metadata)


def _show_result(msg_id: str, execute_result: dict, metadata: dict) -> None:
    from IPython.display import display

    display(ExecuteReply(msg_id, execute_result, metadata))


def display_outputs(ar, groupby: str = "type", result_only: bool = False) -> None:
    """Redraw a finished ``AsyncResult``'s output; ``result_only`` shows only the
    ``Out[]`` values (when the rest was streamed already)."""
    if groupby not in GROUPBY:
        raise ValueError(f"groupby must be one of {', '.join(map(repr, GROUPBY))}, "
                         f"not {groupby!r}")
    if not ar.ready():
        raise RuntimeError(f"{ar!r} is not ready yet: wait for it (ar.wait()) first")
    render_outputs(ar._metadata_list(), ar._single_result, groupby, result_only)


def render_outputs(mds: list, single: bool, groupby: str = "type",
                   result_only: bool = False) -> None:
    """Show the output in task metadata dicts (finished or not: after an interrupt, what
    arrived so far). ``single``: one engine's result, shown without headers."""
    streams = StreamWriter()
    in_ipython = _shell() is not None
    if single:
        md = mds[0]
        if not result_only:
            streams.write(md["stdout"], "", sys.stdout)
            streams.write(md["stderr"], "", sys.stderr)
            if in_ipython:
                for content in md["outputs"]:
                    _republish(content, md["engine_id"])
        if in_ipython and md["execute_result"] is not None:
            _show_result(md["msg_id"], md["execute_result"], md)
        return

    def text(md):
        if not result_only:
            streams.write(md["stdout"], f"[stdout:{md['engine_id']}] ", sys.stdout)

    def errors(md):
        if not result_only:
            streams.write(md["stderr"], f"[stderr:{md['engine_id']}] ", sys.stderr)

    def result(md):
        if md["execute_result"] is not None:
            _show_result(md["msg_id"], md["execute_result"], md)

    if groupby == "engine":
        for md in mds:
            text(md)
            errors(md)
            if not in_ipython:
                continue
            rich = md["outputs"] if not result_only else []
            if rich or md["execute_result"] is not None:
                _header(md["engine_id"])
            for content in rich:
                _republish(content, md["engine_id"])
            result(md)
        return

    for md in mds:
        text(md)
    for md in mds:
        errors(md)
    if not in_ipython:
        return
    if not result_only and groupby == "order":
        rounds = max((len(md["outputs"]) for md in mds), default=0)
        for i in range(rounds):
            for md in mds:
                if i < len(md["outputs"]):
                    _header(md["engine_id"])
                    _republish(md["outputs"][i], md["engine_id"])
    elif not result_only:
        for md in mds:
            if md["outputs"]:
                _header(md["engine_id"])
            for content in md["outputs"]:
                _republish(content, md["engine_id"])
    for md in mds:
        result(md)


class LiveOutput:
    """Shows the output of running tasks as it arrives: call ``show_new()`` now and then
    (the ``%%px`` wait loop does, between short waits) and it writes what arrived since
    the previous call, text under ``[stdout:<id>]`` headers, rich output under
    ``[output:<id>]``, ``Out[]`` values, and each engine's traceback (to stderr) as soon
    as its error arrives."""

    def __init__(self, ar, show_errors: bool = True):
        self._ar = ar
        self._show_errors = show_errors
        self._core = ar._client._core
        self._streams = StreamWriter()
        # Per msg_id: characters of stdout and stderr, and outputs, already shown.
        self._shown = {msg_id: [0, 0, 0] for msg_id in ar.msg_ids}
        self.errors_shown = 0

    def show_new(self) -> None:
        in_ipython = _shell() is not None
        for msg_id in self._ar.msg_ids:
            task = self._core.task(msg_id)
            if task is None:
                continue
            shown = self._shown[msg_id]
            engine_id = self._core.engine_id(task.engine) if task.engine else None
            new_out, new_err = task.stdout[shown[0]:], task.stderr[shown[1]:]
            shown[0], shown[1] = len(task.stdout), len(task.stderr)
            self._streams.write(new_out, f"[stdout:{engine_id}] ", sys.stdout)
            self._streams.write(new_err, f"[stderr:{engine_id}] ", sys.stderr)
            outputs = json.loads(task.outputs)
            for out in outputs[shown[2]:]:
                self._show_one(msg_id, engine_id, task.engine, out, in_ipython)
            shown[2] = len(outputs)

    def _show_one(self, msg_id, engine_id, uuid, out: dict, in_ipython: bool) -> None:
        kind, content = out.get("msg_type"), out.get("content") or {}
        if kind == "error":
            if not self._show_errors:
                return
            info = {"engine_id": engine_id, "engine_uuid": uuid, "method": "execute"}
            err = error.unwrap_exception(dict(content, engine_info=info))
            self.errors_shown += 1
            if self.errors_shown <= error.CompositeError.tb_limit:
                print("\n".join(err.render_traceback()), file=sys.stderr)
            else:  # past the limit, one line each
                print(err, file=sys.stderr)
            sys.stderr.flush()
        elif not in_ipython:
            return
        elif kind == "display_data":
            _header(engine_id)
            _republish(content, engine_id)
        elif kind == "execute_result":
            _show_result(msg_id, content, {"engine_id": engine_id, "execute_result": content})


@contextlib.contextmanager
def stream_output(ar, interval: float = 0.05):
    """``ar.stream_output()``: while the ``with`` block runs, the tasks' output is shown as
    it arrives (as ``%%px --stream`` shows it); on leaving, whatever arrived last.

    A thread shows it, so the block may do anything, ``ar.get()`` included. It wakes as
    soon as the tasks finish and otherwise every ``interval`` seconds: output is filed by
    the client's I/O thread, and this only prints what is new since the last look.
    """
    live = LiveOutput(ar)
    stop = threading.Event()

    def show_while_running():
        while not stop.is_set():
            done = ar.wait(interval)
            live.show_new()
            if done:
                return

    shower = threading.Thread(target=show_while_running, name="corral-stream-output",
                              daemon=True)
    shower.start()
    try:
        yield
    finally:
        stop.set()
        shower.join()
        live.show_new()
