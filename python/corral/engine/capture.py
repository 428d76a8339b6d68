"""stdout/stderr of user code become `stream` messages.

Text is buffered in Python and flushed (one message per flush, not per `write`): at task
end before the reply, before each `publish_data` (so output keeps its order relative to
data), and every `FLUSH_INTERVAL` seconds by a daemon thread, so long tasks stream.
All flushes take the executor's lock, which also guards busy/reply/idle, so text never
lands under the wrong parent.
"""

from __future__ import annotations

import io
import threading

#: Seconds between periodic flushes while a task runs.
FLUSH_INTERVAL = 0.1


class StreamCapture(io.TextIOBase):
    """A text stream that queues what is written as `stream` messages named `name`."""

    def __init__(self, name: str, rt, lock: threading.RLock):
        super().__init__()
        self.name = name
        self._rt = rt
        self._lock = lock
        self._parts: list[str] = []

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        with self._lock:
            self._parts.append(s)
        return len(s)

    def pending(self) -> bool:
        return bool(self._parts)

    def flush(self) -> None:
        with self._lock:
            if not self._parts:
                return
            text = "".join(self._parts)
            self._parts.clear()
            self._rt.stream(self.name, text)


class Flusher(threading.Thread):
    """Flushes the captures periodically until stopped."""

    def __init__(self, streams: list[StreamCapture]):
        super().__init__(name="corral-stream-flush", daemon=True)
        self._streams = streams
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(FLUSH_INTERVAL):
            for s in self._streams:
                try:
                    s.flush()
                except Exception:  # a closed runtime at exit: nothing left to send to
                    return

    def stop(self) -> None:
        self._stop_event.set()
