"""Exceptions with ipyparallel's names and behaviour (``ipyparallel.error``).

``RemoteError`` carries an engine's exception (name, value, traceback text, engine info);
``CompositeError`` gathers the errors of a multi-engine result. An error whose remote
name is ``EngineError`` (an engine died under a task) is raised as a ``RemoteError`` that
is also an ``EngineError``, so either ``except`` clause catches it.
"""

from __future__ import annotations

import builtins

__all__ = [
    "AlreadyDisplayedError",
    "CompositeError",
    "ControllerLost",
    "EngineError",
    "ImpossibleDependency",
    "InvalidDependency",
    "IPythonError",
    "KernelError",
    "NoEnginesRegistered",
    "RemoteEngineError",
    "RemoteError",
    "TaskAborted",
    "TaskTimeout",
    "TimeoutError",
    "UnmetDependency",
    "collect_exceptions",
    "unwrap_exception",
]

# ipyparallel keeps `error.TimeoutError` as an alias of the builtin.
TimeoutError = builtins.TimeoutError


class IPythonError(Exception):
    """Base class for corral's (and ipyparallel's) errors."""


class KernelError(IPythonError):
    pass


class EngineError(KernelError):
    """An engine died or misbehaved while it held a task."""


class NoEnginesRegistered(KernelError):
    """A view was used while no engine is registered."""

    def __str__(self):
        return (
            "This operation requires engines. Try client.wait_for_engines(n) to wait "
            "for engines to register."
        )


class ControllerLost(IPythonError, ConnectionError):
    """The controller stopped answering: its connection closed and did not come back in
    time. Raised by every wait on an unfinished result, and by later submissions and
    engine-list reads of that client (results received before stay readable). Also a
    ``ConnectionError``, for code that catches that."""


class TaskAborted(KernelError):
    """The task was aborted before it ran."""


class TaskTimeout(KernelError):
    pass


class UnmetDependency(KernelError):
    pass


class ImpossibleDependency(UnmetDependency):
    pass


class InvalidDependency(ImpossibleDependency):
    pass


class RemoteError(KernelError):
    """An exception raised on an engine."""

    ename = None
    evalue = None
    traceback = None
    engine_info = None

    def __init__(self, ename, evalue, traceback, engine_info=None):
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback
        self.engine_info = engine_info or {}
        self.args = (ename, evalue)

    def __repr__(self):
        engine_id = self.engine_info.get("engine_id", " ")
        return f"<{type(self).__name__}[{engine_id}]:{self.ename}({self.evalue})>"

    def __str__(self):
        return f"{self._get_engine_str(self.engine_info)} {self.ename}: {self.evalue}"

    @staticmethod
    def _get_engine_str(engine_info):
        if not engine_info:
            return "[Engine Exception]"
        return f"[{engine_info.get('engine_id')}:{engine_info.get('method', 'apply')}]"

    def render_traceback(self):
        """The traceback as a list of lines, headed by ``[engine_id:method]``."""
        return [self._get_engine_str(self.engine_info)] + (
            self.traceback or "No traceback available"
        ).splitlines()

    def _render_traceback_(self):
        # IPython shows this instead of the local traceback.
        return self.render_traceback()

    def print_traceback(self, excid=None):
        print("\n".join(self.render_traceback()))


class RemoteEngineError(RemoteError, EngineError):
    """A ``RemoteError`` named ``EngineError``: the engine died while running the task."""


class CompositeError(RemoteError):
    """The errors of several engines, as ``(ename, evalue, traceback, engine_info)``."""

    tb_limit = 4

    def __init__(self, message, elist):
        Exception.__init__(self, message, elist)
        self.msg = message
        self.elist = elist
        self.args = [e[0] for e in elist]
        self.engine_info = {}

    def __str__(self):
        s = str(self.msg)
        for en, ev, _etb, ei in self.elist[: self.tb_limit]:
            s += "\n" + self._get_engine_str(ei) + en + ": " + str(ev)
        if len(self.elist) > self.tb_limit:
            s += f"\n.... {len(self.elist) - self.tb_limit} more exceptions ..."
        return s

    def __repr__(self):
        return f"CompositeError({len(self.elist)})"

    def render_traceback(self, excid=None):
        lines = []
        chosen = self.elist[: self.tb_limit] if excid is None else [self._one(excid)]
        for _en, _ev, etb, ei in chosen:
            lines.append(self._get_engine_str(ei) + ":")
            lines.extend((etb or "No traceback available").splitlines())
            if excid is None:
                lines.append("")
        if excid is None and len(self.elist) > self.tb_limit:
            lines.append(f"... {len(self.elist) - self.tb_limit} more exceptions ...")
        return lines

    def print_traceback(self, excid=None):
        print("\n".join(self.render_traceback(excid)))

    def _one(self, excid):
        try:
            return self.elist[excid]
        except Exception:
            raise IndexError(f"an exception with index {excid} does not exist") from None

    def raise_exception(self, excid=0):
        raise remote_error(*self._one(excid))


class AlreadyDisplayedError(CompositeError):
    """Engines' errors whose tracebacks were already shown while output streamed (``%%px
    --stream``): IPython shows only how many there were instead of repeating them. Still a
    ``CompositeError``, so ``except CompositeError`` code keeps working."""

    def __init__(self, original_error: RemoteError):
        self.original_error = original_error
        if isinstance(original_error, CompositeError):
            elist = list(original_error.elist)
            message = original_error.msg
        else:
            e = original_error
            elist = [(e.ename, e.evalue, e.traceback, e.engine_info)]
            message = str(e)
        super().__init__(message, elist)
        self.n = len(elist)

    def __repr__(self):
        return f"<{type(self).__name__}({self})>"

    def __str__(self):
        return f"{self.n} error" if self.n == 1 else f"{self.n} errors"

    def render_traceback(self, excid=None):
        if excid is not None:
            return super().render_traceback(excid)
        return [str(self)]


def remote_error(ename, evalue, traceback, engine_info=None) -> RemoteError:
    """The right ``RemoteError`` class for a remote exception name."""
    cls = RemoteEngineError if ename == "EngineError" else RemoteError
    return cls(ename, evalue, traceback, engine_info)


def unwrap_exception(content: dict) -> RemoteError:
    """An error reply's content (``status: error``) as a ``RemoteError``."""
    return remote_error(
        content.get("ename", "Exception"),
        content.get("evalue", ""),
        "\n".join(content.get("traceback") or []),
        content.get("engine_info") or {},
    )


def collect_exceptions(results, method="unspecified"):
    """Raise a ``CompositeError`` if any result is a ``RemoteError``, else pass through."""
    values = results.values() if isinstance(results, dict) else results
    elist = []
    for r in values:
        if isinstance(r, CompositeError):
            elist.extend(r.elist)
        elif isinstance(r, RemoteError):
            elist.append((r.ename, r.evalue, r.traceback, r.engine_info))
    if elist:
        raise CompositeError(f"one or more exceptions raised in: {method}", elist)
    return results
