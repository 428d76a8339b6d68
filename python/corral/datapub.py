"""`publish_data(dict)`: publish values from a running task to the client's `ar.data`.

Inside a corral engine the executor installs the publisher; anywhere else calling it is
an error. The call pickles the dict (large numpy arrays as separate frames, not copied
into the pickle) and queues the frames to the engine's IOPub thread; it never waits for
the network.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

#: Set by the engine's executor: a callable taking the dict.
_publisher: Optional[Callable[[dict], None]] = None


def publish_data(data: dict[str, Any]) -> None:
    """Publish `data` (a dict) for the task currently running on this engine.

    The client merges it into the task's `AsyncResult.data` (later keys overwrite).
    """
    pub = _publisher
    if pub is None:
        raise RuntimeError(
            "publish_data() only works inside a task running on a corral engine "
            "(it was called in a process that is not an engine)"
        )
    if not isinstance(data, dict):
        raise TypeError(f"publish_data() takes a dict, not {type(data).__name__}")
    pub(data)


__all__ = ["publish_data"]
