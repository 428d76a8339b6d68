"""Completion signals for ``AsyncResult`` as a ``concurrent.futures.Future``.

A result is resolved in the thread that asks for it (``get``, ``wait``, ``done``) at no
extra cost. Only when someone must be *told* — a done-callback, ``concurrent.futures.wait``
/ ``as_completed``, ``await`` / ``asyncio.wrap_future`` — is the result *watched*: its
msg_ids are handed to the Rust store, which reports them as they become ready to one
waiter thread per client (``ClientCore.wait_completed``, the GIL released while it
blocks). That thread resolves the ``AsyncResult``, which runs the callbacks and wakes the
waiters. No thread polls per result, and results nobody watches cost nothing here.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["CompletionWatcher", "WatchingWaiters", "watcher_of"]

log = logging.getLogger(__name__)

#: How long the waiter thread blocks in Rust per call; bounds how late it notices that
#: its client was closed.
_WAIT_SLICE = 1.0


class CompletionWatcher:
    """The one waiter thread of a client: resolves the watched ``AsyncResult``s as the
    store reports their msg_ids ready. The thread runs only while something is watched."""

    def __init__(self, core):
        self._core = core
        self._lock = threading.Lock()
        #: msg_id -> the AsyncResults that wait for it (a result over several msg_ids is
        #: listed under each until that one is reported).
        self._waiting: dict[str, list] = {}
        self._thread: threading.Thread | None = None

    def watch(self, ar) -> None:
        """Resolve ``ar`` as soon as its tasks are done (idempotent for done tasks)."""
        with self._lock:
            for msg_id in ar._completion_ids():
                self._waiting.setdefault(msg_id, []).append(ar)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="corral-futures",
                                                daemon=True)
                self._thread.start()
        self._core.watch(list(ar._completion_ids()))

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._waiting or self._core.closed:
                    self._thread = None
                    return
            try:
                done = self._core.wait_completed(_WAIT_SLICE)
            except Exception:  # not expected: the wait reports loss as completions
                log.exception("waiting for completions failed; trying again in a second")
                time.sleep(_WAIT_SLICE)
                continue
            if not done:
                continue
            ready = {}
            with self._lock:
                for msg_id in done:
                    for ar in self._waiting.pop(msg_id, ()):
                        ready[id(ar)] = ar
            for ar in ready.values():
                try:
                    ar._resolve_if_done()
                except Exception:
                    log.exception("resolving %r failed", ar)


def watcher_of(client) -> CompletionWatcher:
    """The client's watcher, made on first use."""
    watcher = getattr(client, "_completion_watcher", None)
    if watcher is None:
        watcher = client._completion_watcher = CompletionWatcher(client._core)
    return watcher


class WatchingWaiters(list):
    """``Future._waiters`` of an ``AsyncResult``: ``concurrent.futures.wait`` and
    ``as_completed`` append their waiter here, which is the moment the result must start
    being watched (they never call a public method of the future we could hook)."""

    __slots__ = ("_ar",)

    def __init__(self, ar):
        super().__init__()
        self._ar = ar

    def append(self, waiter):
        super().append(waiter)
        self._ar._watch()
