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
class ClientCore:
    """A client's sockets, I/O thread and result store."""

    @staticmethod
    def connect(url_file: str, timeout: float) -> ClientCore: ...
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
    def outstanding(self, msg_ids: list[str]) -> list[str]: ...
    def forget(self, msg_ids: list[str]) -> list[str]: ...
    def ready(self, msg_id: str) -> bool: ...
    def reply(self, msg_id: str) -> tuple[str, str, str, list[bytes]] | None: ...
    def task(self, msg_id: str) -> tuple[str | None, str, str, str, str, int] | None: ...
    def take_data(self, msg_ids: list[str]) -> list[list[list[bytes]]]: ...
    def engines(self) -> list[tuple[int, str]]: ...
    def engine_id(self, uuid: str) -> int | None: ...
    def wait_for_engines(self, n: int, timeout: float) -> int: ...
    def hub_request(
        self, msg_type: str, content: str, timeout: float
    ) -> tuple[str, str, list[bytes]]: ...
    def hub_shut_down(self) -> bool: ...
    def close(self) -> None: ...
