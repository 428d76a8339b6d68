"""Types of the native module ``corral._core`` (PyO3 bindings in ``crates/py``).

Kept in step with the Rust signatures by ``tests/test_stub.py`` (``mypy.stubtest``).
Every blocking call releases the GIL and turns Ctrl-C into ``KeyboardInterrupt``.
JSON travels as ``str`` (client) or ``str | bytes`` (engine), payload frames as ``bytes``.
"""

from collections.abc import Iterable
from typing import Literal, final

from typing_extensions import Buffer

__all__ = [
    "__version__",
    "controller_main",
    "EngineRuntime",
    "EngineRequest",
    "engine_init_logging",
    "ClientCore",
    "Reply",
    "TaskInfo",
    "HubReply",
]

__version__: str

def controller_main(args: list[str]) -> int:
    """Runs ``corral controller`` with command-line ``args`` until shut down."""

def engine_init_logging(level: str = "warn") -> None:
    """Installs the Rust engine's log subscriber (stderr) at ``level``."""

_Json = str | bytes
_Frames = Iterable[bytes | Buffer]

@final
class EngineRequest:
    """One request for the executor; routing stays in Rust."""

    @property
    def channel(self) -> Literal["shell", "control"]: ...
    @property
    def msg_type(self) -> str: ...
    @property
    def msg_id(self) -> str: ...
    @property
    def header(self) -> bytes: ...
    @property
    def metadata(self) -> bytes: ...
    @property
    def content(self) -> bytes: ...
    @property
    def buffers(self) -> list[bytes]: ...

@final
class EngineRuntime:
    """An engine's registration, sockets and I/O threads."""

    @staticmethod
    def connect(
        path: str,
        timeout: float = 5.0,
        queue_capacity: int = 65536,
        insecure: bool = False,
        lost_grace: float = 3.0,
    ) -> EngineRuntime: ...
    @property
    def uuid(self) -> str: ...
    @property
    def id(self) -> int: ...
    @property
    def hb_period(self) -> int: ...
    def next_request(
        self, timeout: float | None = None
    ) -> EngineRequest | Literal["shutdown", "lost"] | None: ...
    def controller_lost(self) -> str | None: ...
    def begin(self, req: EngineRequest) -> None: ...
    def end(self, req: EngineRequest) -> None: ...
    def reply(
        self,
        req: EngineRequest,
        msg_type: str,
        content: _Json,
        metadata: _Json,
        buffers: _Frames | None = None,
    ) -> None: ...
    def publish(
        self,
        topic: str,
        msg_type: str,
        content: _Json,
        engine_md: bool = True,
        buffers: _Frames | None = None,
    ) -> None: ...
    def stream(self, name: str, text: str) -> None: ...
    def publish_data(self, keys: Iterable[object], frames: _Frames) -> None: ...
    def close(self, unregister: bool = True) -> None: ...

@final
class Reply:
    """A task's reply: header, content and metadata as JSON text, and its buffers."""

    @property
    def header(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def metadata(self) -> str: ...
    @property
    def buffers(self) -> list[bytes]: ...

@final
class TaskInfo:
    """What is known of a task so far (for its metadata)."""

    @property
    def engine(self) -> str | None: ...
    @property
    def submitted(self) -> str: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...
    @property
    def outputs(self) -> str: ...
    @property
    def data_received(self) -> int: ...

@final
class HubReply:
    """The Hub's answer to a query: its msg_type, content (JSON text) and buffers."""

    @property
    def msg_type(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def buffers(self) -> list[bytes]: ...

@final
class ClientCore:
    """A client's sockets, I/O thread and result store. Once the controller is lost,
    waits on unfinished tasks, submissions and engine-list reads raise
    ``corral.error.ControllerLost``."""

    @staticmethod
    def connect(
        url_file: str, timeout: float, insecure: bool = False, grace: float | None = None
    ) -> ClientCore: ...
    @property
    def session(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def submit(
        self,
        channel: str,
        target: str | None,
        msg_type: str,
        content: str,
        metadata: str,
        buffers: list[bytes],
    ) -> str: ...
    def submit_broadcast(
        self,
        targets: list[tuple[str, int]],
        msg_type: str,
        content: str,
        metadata: str,
        buffers: list[bytes],
    ) -> list[str]: ...
    def wait(self, msg_ids: list[str], timeout: float | None = None) -> bool: ...
    def wait_data(
        self, msg_ids: list[str], seen: int, timeout: float | None = None
    ) -> tuple[int, bool]: ...
    def check_controller(self) -> None: ...
    def outstanding(self, msg_ids: list[str]) -> list[str]: ...
    def forget(self, msg_ids: list[str]) -> list[str]: ...
    def forget_finished(self) -> int: ...
    def stats(self) -> dict[str, int]: ...
    def ready(self, msg_id: str) -> bool: ...
    def reply(self, msg_id: str) -> Reply | None: ...
    def task(self, msg_id: str) -> TaskInfo | None: ...
    def take_data(self, msg_ids: list[str]) -> list[list[list[bytes]]]: ...
    def engines(self) -> list[tuple[int, str]]: ...
    def engine_id(self, uuid: str) -> int | None: ...
    def wait_for_engines(self, n: int, timeout: float) -> int: ...
    def hub_request(self, msg_type: str, content: str, timeout: float) -> HubReply: ...
    def hub_pending(self) -> int: ...
    def hub_shut_down(self) -> bool: ...
    def close(self) -> None: ...
