"""The executor: runs on the engine's main thread and turns each request into
`busy` → outputs → reply → `idle` (the Rust runtime sends them in that order).

Replies follow ipyparallel's kernel (`engine/kernel.py`) and ipykernel: `apply_reply`
with `serialize_object(result)` buffers, `execute_reply` as ipykernel's `do_execute` builds
it (code run by the engine's IPython shell, see `shell.py`), errors as `wrap_exception`
content plus an `error` IOPub message, and reply metadata as docs/PROTOCOL.md §6.1.

SIGINT raises `KeyboardInterrupt` only while user code runs (as ipykernel arranges it);
between tasks it is logged and ignored, so an interrupt can never cut a reply in half.
One handler stays installed and reads a flag: swapping handlers per task cost two
`signal.signal` calls per request.
"""

from __future__ import annotations

import json
import logging
import pickle
import signal
import sys
import threading
import traceback
import types
from collections import deque
from datetime import datetime, timezone
from typing import Any

import corral.datapub
from corral.engine import compat
from corral.engine.capture import Flusher, StreamCapture
from corral.engine.data_preview import preview_json
from corral.engine.jsonmsg import dumps
from corral.engine.namespace import LastSentFunction, bind_sent_functions
from corral.engine.watchdog import EXIT_CONTROLLER_LOST, ControllerWatch
from corral.serialize import is_ipyparallel_payload, serialize_object, unpack_apply_message
from corral.serialize import switch
from corral.serialize.serialize import pickle_to_frames

log = logging.getLogger("corral.engine")


class Terminate(BaseException):
    """Raised by the SIGTERM handler: leave the request loop and exit cleanly."""


def _open_trace():
    """The engine's Python trace file when `CORRAL_TRACE` names a directory (see
    `corral_wire::trace`: lines `<point> <msg_id> <ns>`, wall clock), else None."""
    import os

    folder = os.environ.get("CORRAL_TRACE")
    if not folder:
        return None
    try:
        return os.open(os.path.join(folder, f"engine-py-{os.getpid()}.trace"),
                       os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return None


#: Read once: with tracing off, a trace point costs one comparison.
_TRACE_FD = _open_trace()


def trace_point(point: str, msg_id: str) -> None:
    if _TRACE_FD is not None:
        import os
        import time

        os.write(_TRACE_FD, f"{point} {msg_id} {time.time_ns()}\n".encode())


def iso_now() -> str:
    """UTC now as ipyparallel writes dates (`...T12:00:00.000001Z`); `isoformat` is C
    and several times faster than `strftime`."""
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def pickle_frames(data: Any, out_of_band: bool) -> list:
    """Fast path of `serialize_object` for published data: the stdlib pickler (protocol 5,
    large buffers out of band), falling back to cloudpickle for what it cannot pickle."""
    try:
        return pickle_to_frames(pickle.dumps, data, out_of_band=out_of_band)
    except Exception:
        return serialize_object(data, out_of_band=out_of_band)


def parse_json(raw: bytes) -> Any:
    """A JSON frame (already checked by the runtime); `None` if Python reads it otherwise."""
    try:
        return json.loads(raw)
    except Exception:
        return None


def new_user_module() -> types.ModuleType:
    """A fresh `__main__` for user code, so functions defined by tasks pickle by reference
    the way they would in a script."""
    mod = types.ModuleType("__main__")
    mod.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = mod
    return mod


def ignore_sigint(signum, frame):
    log.warning("SIGINT while no task runs: ignored (it interrupts running tasks)")


class Executor:
    def __init__(self, rt, shell):
        """`shell`: the engine's `EngineShell` (see `shell.create_shell`); its namespace is
        the one every request runs in."""
        self.rt = rt
        self.shell = shell
        shell.rt = rt
        self.user_ns = shell.user_ns
        #: Counts non-silent executes (`execute_input`), as ipykernel's kernel does; the
        #: shell keeps its own count of cells stored in history (the reply's).
        self.execution_count = 0
        # Guards busy/reply/idle sequences and stream flushes (see capture.py).
        self.lock = threading.RLock()
        self.stdout = StreamCapture("stdout", rt, self.lock)
        self.stderr = StreamCapture("stderr", rt, self.lock)
        self.flusher = Flusher([self.stdout, self.stderr])
        self.current = None  # the request being executed
        self.stock_peer = False  # the running request came from stock ipyparallel
        self.engine_info = {"engine_uuid": rt.uuid, "engine_id": rt.id}
        self.watch = ControllerWatch(rt, busy=lambda: self.current is not None)
        #: Requests taken from the runtime while aborting queued executes, served next.
        self.pending: deque = deque()
        #: Execute requests to answer `aborted` after the current reply (see
        #: `take_queued_executes`).
        self.aborting: list = []
        #: True while a request's handler runs: a SIGINT then raises KeyboardInterrupt.
        self.interruptible = False
        #: The last apply's function, for the next apply of the same pickle.
        self.last_function = LastSentFunction()

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Serves requests until shutdown; returns the process exit code."""
        corral.datapub._publisher = self.publish_data
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.stdout, self.stderr
        self.flusher.start()
        self.watch.start()
        signal.signal(signal.SIGINT, self.on_sigint)
        code, unregister = 0, True
        try:
            while True:
                try:
                    req = self.pending.popleft() if self.pending else self.rt.next_request(1.0)
                    if req is None:
                        continue
                    if req == "shutdown":
                        log.info("shutdown requested")
                        break
                    if req == "lost":
                        why = self.rt.controller_lost() or "the controller is gone"
                        log.error("controller lost: %s; exiting (status %d)", why,
                                  EXIT_CONTROLLER_LOST)
                        code, unregister = EXIT_CONTROLLER_LOST, False
                        break
                    self.handle(req)
                except KeyboardInterrupt:
                    log.info("SIGINT outside a task: ignored (it interrupts running tasks)")
                    self.current = None
                except Exception:  # never let one request end the engine
                    log.exception("engine failure serving a request; serving on")
                    self.current = None
        except Terminate:
            log.info("SIGTERM: exiting")
        finally:
            self.watch.stop()
            self.flusher.stop()
            for s in (self.stdout, self.stderr):
                try:
                    s.flush()
                except Exception:
                    pass
            sys.stdout, sys.stderr = saved
            corral.datapub._publisher = None
            self.rt.close(unregister)
        return code

    def on_sigint(self, signum, frame):
        if self.interruptible:
            raise KeyboardInterrupt
        ignore_sigint(signum, frame)

    def handle(self, req) -> None:
        """One request: busy, run, flush output, reply, idle."""
        handlers = {
            "apply_request": self.do_apply,
            "execute_request": self.do_execute,
            "clear_request": self.do_clear,
        }
        if _TRACE_FD is not None:
            trace_point("e_run_start", req.msg_id)
        handler = handlers.get(req.msg_type, self.do_unknown)
        # Any JSON can arrive in a signed message: metadata that is not an object reads as
        # empty (ipyparallel's kernel only looks up keys in it); handlers check content.
        md = parse_json(req.metadata)
        if not isinstance(md, dict):
            md = {}
        content = parse_json(req.content)
        started = iso_now()
        with self.lock:
            self.current = req
            self.rt.begin(req)
        buffers: list = []
        self.interruptible = True
        try:
            reply, buffers = handler(req, content)
        except Terminate:
            raise
        except BaseException as e:  # a bug here must still answer the request
            log.exception("engine failure handling %s", req.msg_type)
            reply = self.error_content(e, req.msg_type.replace("_request", ""))
            buffers = []
        finally:
            self.interruptible = False
        status = reply.get("status", "ok")
        reply_md = {
            "started": started,
            "dependencies_met": reply.get("ename") != "UnmetDependency",
            "engine": self.rt.uuid,
            "is_broadcast": md.get("is_broadcast", False),
            "is_coalescing": md.get("is_coalescing", False),
            "original_msg_id": md.get("original_msg_id", ""),
            "label": md.get("label"),
            "status": status,
        }
        if status == "error":
            reply_md["engine_info"] = reply.get("engine_info", self.engine_info)
        if req.channel == "control":
            reply_md = {"engine": self.rt.uuid}
        if _TRACE_FD is not None:
            trace_point("e_run_end", req.msg_id)
        with self.lock:
            self.stdout.flush()
            self.stderr.flush()
            self.rt.reply(
                req, req.msg_type.replace("_request", "_reply"), dumps(reply), dumps(reply_md), buffers
            )
            self.rt.end(req)
            self.current = None
            self.stock_peer = False
        for queued in self.aborting:
            self.answer_aborted(queued)
        self.aborting = []

    def take_queued_executes(self) -> list:
        """After a failed non-silent execute, the execute requests already received are
        answered `aborted` (after its reply), as ipykernel does with `stop_on_error`, so
        `%autopx` does not run the cells queued behind an error. Taken before the reply
        goes out, so nothing sent after the client saw the error is aborted; other requests
        keep their turn."""
        taken = [r for r in self.pending if self._is_execute(r)]
        kept = deque(r for r in self.pending if not self._is_execute(r))
        while not (kept and isinstance(kept[-1], str)):  # stop at shutdown / lost
            req = self.rt.next_request(0)
            if req is None:
                break
            (taken if self._is_execute(req) else kept).append(req)
        self.pending = kept
        return taken

    @staticmethod
    def _is_execute(req) -> bool:
        return not isinstance(req, str) and req.channel == "shell" and (
            req.msg_type == "execute_request")

    def answer_aborted(self, req) -> None:
        log.info("aborting %s %s (an earlier execute failed)", req.msg_type, req.msg_id)
        md = parse_json(req.metadata)
        if not isinstance(md, dict):
            md = {}
        reply_md = {
            "started": iso_now(),
            "dependencies_met": True,
            "engine": self.rt.uuid,
            "is_broadcast": md.get("is_broadcast", False),
            "is_coalescing": md.get("is_coalescing", False),
            "original_msg_id": md.get("original_msg_id", ""),
            "label": md.get("label"),
            "status": "aborted",
        }
        with self.lock:
            self.rt.begin(req)
            self.rt.reply(req, "execute_reply", dumps({"status": "aborted"}), dumps(reply_md))
            self.rt.end(req)

    # -- handlers: each returns (reply content, reply buffers) -------------------------

    def error_content(self, exc: BaseException, method: str) -> dict:
        """`wrap_exception` content, and the `error` IOPub message for it."""
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        info = dict(self.engine_info, method=method)
        content = {
            "status": "error",
            "traceback": tb,
            "ename": type(exc).__name__,
            "evalue": str(exc),
            "engine_info": info,
        }
        self.rt.publish("error", "error", dumps(content))
        return content

    def do_apply(self, req, content: Any):
        frames = req.buffers
        self.stock_peer = is_ipyparallel_payload(frames)
        try:
            reuse = self.last_function if switch.functions_use_engine_namespace() else None
            f, args, kwargs = unpack_apply_message(frames, self.user_ns, reuse)
            f = switch.follow_stock_switch(f)
            if switch.functions_use_engine_namespace():
                f, args, kwargs = bind_sent_functions(f, args, kwargs, self.user_ns)
            result = f(*args, **kwargs)
            buffers = serialize_object(result, out_of_band=not self.stock_peer)
        except Terminate:
            raise
        except BaseException as e:
            return self.error_content(_strip_frames(e), "apply"), []
        return {"status": "ok"}, buffers

    def do_execute(self, req, content: Any):
        if not isinstance(content, dict):
            raise TypeError(f"execute_request content must be an object, not {_json_type(content)}")
        code = content.get("code", "")
        if not isinstance(code, str):
            raise TypeError(f"execute_request code must be a string, not {_json_type(code)}")
        silent = bool(content.get("silent", False))
        store_history = bool(content.get("store_history", not silent))
        expressions = content.get("user_expressions") or {}
        if not isinstance(expressions, dict):
            raise TypeError(
                f"execute_request user_expressions must be an object, not {_json_type(expressions)}"
            )
        if not silent:
            self.execution_count += 1
            self.rt.publish(
                "execute_input",
                "execute_input",
                dumps({"code": code, "execution_count": self.execution_count}),
            )
        shell = self.shell
        res = shell.run_cell(code, store_history=store_history, silent=silent)
        err = res.error_before_exec if res.error_before_exec is not None else res.error_in_exec
        if isinstance(err, Terminate):  # SIGTERM during the cell: the engine stops
            raise err
        reply: dict = {}
        if res.success and not shell._traceback_in_displayhook:
            reply["status"] = "ok"
        else:
            reply.update(
                status="error",
                traceback=shell._last_traceback or [],
                ename=type(err).__name__,
                evalue=str(err),
                engine_info=dict(self.engine_info, method="execute"),
            )
        reply["execution_count"] = shell.execution_count - 1
        if reply["status"] == "ok":
            reply["user_expressions"] = shell.user_expressions(expressions)
        else:
            reply["user_expressions"] = {}
        reply["payload"] = shell.payload_manager.read_payload()
        shell.payload_manager.clear_payload()
        if reply["status"] == "error" and not silent and content.get("stop_on_error", True):
            self.aborting = self.take_queued_executes()
        return reply, []

    def do_clear(self, req, content: Any):
        """A fresh namespace, as ipyparallel's `clear_request` (the shell's `reset`)."""
        self.shell.reset(new_session=False)
        return {"status": "ok"}, []

    def do_unknown(self, req, content: Any):
        return {
            "status": "error",
            "ename": "NotImplementedError",
            "evalue": f"corral engine does not handle {req.msg_type!r}",
            "traceback": [],
            "engine_info": dict(self.engine_info, method=req.msg_type),
        }, []

    # -- data publication -------------------------------------------------------------

    def publish_data(self, data: dict) -> None:
        if self.stdout._parts or self.stderr._parts:
            with self.lock:
                self.stdout.flush()
                self.stderr.flush()
        frames = pickle_frames(data, not self.stock_peer)
        # Only a controller with a dashboard shows previews (and asks for them).
        preview = preview_json(data) if self.rt.data_preview else None
        self.rt.publish_data(list(data), frames, preview)


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _strip_frames(exc: BaseException) -> BaseException:
    """Drops the executor's own frames from the traceback, so users see their code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_globals.get("__name__") == __name__:
        tb = tb.tb_next
    if tb is not None:
        exc.__traceback__ = tb
    return exc
