"""Noticing the controller's death while a task runs.

Between tasks the executor asks the runtime for the next request and hears "lost" there.
During a task the main thread is in user code, so this thread watches instead: it
interrupts the task as Ctrl-C would (KeyboardInterrupt; its result could not be delivered
anyway), and if the task ignores that, ends the process after `HARD_EXIT_AFTER` seconds,
so an engine outlives its controller by a bounded time whatever it runs.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Callable

log = logging.getLogger("corral.engine")

#: Exit status of an engine whose controller is gone.
EXIT_CONTROLLER_LOST = 3
#: How often the runtime is asked (three atomic loads in Rust).
POLL_INTERVAL = 0.25
#: Seconds a task may keep running after it was interrupted.
HARD_EXIT_AFTER = 10.0


class ControllerWatch(threading.Thread):
    def __init__(self, rt, busy: Callable[[], bool]):
        super().__init__(name="corral-controller-watch", daemon=True)
        self._rt = rt
        self._busy = busy
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(POLL_INTERVAL):
            why = self._rt.controller_lost()
            if why is None or not self._busy():
                continue  # idle: the request loop hears "lost" itself
            log.error("controller lost while a task runs (%s); interrupting the task", why)
            # A real SIGINT to the main thread, so a blocking call (sleep, I/O) wakes too.
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            if self._stop_event.wait(HARD_EXIT_AFTER):
                return
            log.error(
                "the task did not stop within %.0f s of the interrupt; exiting now (status %d)",
                HARD_EXIT_AFTER, EXIT_CONTROLLER_LOST,
            )
            logging.shutdown()
            os._exit(EXIT_CONTROLLER_LOST)

    def stop(self) -> None:
        self._stop_event.set()
