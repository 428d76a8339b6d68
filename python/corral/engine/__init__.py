"""The corral engine: a Python process that executes tasks while Rust threads
(`corral._core.EngineRuntime`) own its sockets, heartbeat and IOPub.

- `app`: the `corral engine` command (options, connection file, signals).
- `executor`: runs `apply_request`/`execute_request`/`clear_request` and builds replies.
- `shell`: the IPython shell `execute` runs in; its display output goes to IOPub.
- `capture`: stdout/stderr of user code as `stream` messages.
- `jsonmsg`: JSON for message content (images as base64).
- `compat`: makes `ipyparallel.datapub.publish_data` publish through corral.
"""
