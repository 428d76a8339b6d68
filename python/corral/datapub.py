"""`publish_data(dict)`: publish values from a running task to the client's `ar.data`.

Inside a corral engine the executor installs the publisher; anywhere else calling it is
an error. The call pickles the dict (large numpy arrays as separate frames, not copied
into the pickle) and queues the frames to the engine's IOPub thread; it does not wait for
the network.

Each array is copied once, when it is queued: what is published is the value at the
time of the call, so a task may change the array in place right after (ZeroMQ then sends
that copy without copying again).

The engine bounds in bytes what it holds of publications (`max_data_bytes` of
`EngineRuntime.connect`, 16 MB by default, once for updates not yet sent and once for
those being sent). A task publishing faster than the network gets "latest wins": an unsent
update whose keys are all published again later in the same task is dropped, so the
client skips intermediate values but always gets the last value of every key, in order,
before the task's result. Only when unsent updates of *different* keys exceed the bound
does `publish_data` wait for the network. Other output (results, stdout) is never dropped.
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
