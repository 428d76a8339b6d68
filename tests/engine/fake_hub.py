"""A fake controller for one REAL corral engine process: pyzmq sockets bound on 127.0.0.1
acting as the Hub (registration), heartbeat, MUX, task, control and IOPub, so a test can
send the engine any message at all, signed with the cluster key, and read what comes back.

Only loopback is used; `close()` kills the engine process it started (by pid) and closes
every socket.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import zmq

DELIM = b"<IDS|MSG>"


def sign(key: bytes, parts: list[bytes]) -> bytes:
    if not key:
        return b""
    return hmac.new(key, b"".join(parts), hashlib.sha256).hexdigest().encode()


def header(msg_type: str, msg_id: str | None = None) -> dict:
    return {
        "msg_id": msg_id or uuid.uuid4().hex,
        "msg_type": msg_type,
        "username": "test",
        "session": "fake-client",
        "date": "2026-01-01T00:00:00.000000Z",
        "version": "5.4",
    }


def envelope(key: bytes, parts: list[bytes], buffers: list[bytes] = ()) -> list[bytes]:
    """`<IDS|MSG>`, signature over the four JSON frames (raw bytes, any content), frames."""
    return [DELIM, sign(key, parts[:4]), *parts, *buffers]


class FakeHub:
    """The controller side. `start_engine()` runs `python -m corral engine` against it."""

    def __init__(self, workdir: Path, key: bytes | None = None, hb_period_ms: int = 3000):
        self.key = key if key is not None else uuid.uuid4().hex.encode()
        self.seen: dict = {}  # replies to other requests, by parent msg_id
        self.workdir = workdir
        self.hb_period_ms = hb_period_ms
        self.ctx = zmq.Context()
        self.sockets: dict[str, zmq.Socket] = {}
        ports = {}
        kinds = {
            "registration": (zmq.ROUTER, None),
            "hb_ping": (zmq.PUB, None),
            "hb_pong": (zmq.ROUTER, None),
            "mux": (zmq.ROUTER, b"mux_out"),
            "task": (zmq.ROUTER, b"task_out"),
            "control": (zmq.ROUTER, b"control_out"),
            "iopub": (zmq.SUB, None),
        }
        for name, (kind, identity) in kinds.items():
            s = self.ctx.socket(kind)
            s.linger = 0
            if identity:
                s.identity = identity
            if kind == zmq.ROUTER:
                s.router_mandatory = True
            if kind == zmq.SUB:
                s.subscribe(b"")
            ports[name] = s.bind_to_random_port("tcp://127.0.0.1")
            self.sockets[name] = s
        conn = dict(
            ports, interface="tcp://127.0.0.1", broadcast=[], key=self.key.decode(), ssh="",
            location="localhost", signature_scheme="hmac-sha256", pack="json", unpack="json",
            curve_serverkey=None,
        )
        self.file = workdir / "ipcontroller-engine.json"
        self.file.write_text(json.dumps(conn))
        self.engine_uuid: bytes | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "engine.log"
        self._stop = threading.Event()
        self._hub = threading.Thread(target=self._serve_hub, daemon=True)

    # -- the engine process -------------------------------------------------------------

    def start_engine(self, *extra: str, env: dict | None = None, wait: bool = True):
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "corral", "engine", "--file", str(self.file),
             "--log-level", "INFO", *extra],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.workdir, env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
            start_new_session=True,
        )
        log.close()
        self._hub.start()
        if wait:
            deadline = time.monotonic() + 60
            while self.engine_uuid is None:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"engine did not register:\n{self.log()}")
                time.sleep(0.05)
        return self.proc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _serve_hub(self):
        """Answers registration, then pings every period (the pong is not checked)."""
        reg, ping = self.sockets["registration"], self.sockets["hb_ping"]
        next_ping = 0.0
        while not self._stop.is_set():
            if reg.poll(50):
                frames = reg.recv_multipart()
                d = frames.index(DELIM)
                parent = json.loads(frames[d + 2])
                content = json.loads(frames[d + 5])
                if parent.get("msg_type") == "registration_request":
                    parts = [json.dumps(x).encode() for x in (
                        header("registration_reply"), parent, {},
                        {"status": "ok", "id": 0, "hb_period": self.hb_period_ms})]
                    reg.send_multipart(frames[:d] + envelope(self.key, parts))
                    self.engine_uuid = content["uuid"].encode()
            if time.monotonic() >= next_ping:
                ping.send(str(time.time()).encode())
                next_ping = time.monotonic() + self.hb_period_ms / 1000

    # -- talking to the engine ----------------------------------------------------------

    def send(self, channel: str, frames: list[bytes], client: bytes = b"client-1"):
        """Routes `frames` (an envelope) to the engine on `mux` or `control`."""
        sock = self.sockets[channel]
        deadline = time.monotonic() + 10
        while True:
            try:
                sock.send_multipart([self.engine_uuid, client, *frames], zmq.DONTWAIT)
                return
            except (zmq.Again, zmq.ZMQError) as e:
                if isinstance(e, zmq.ZMQError) and e.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                    raise
                if time.monotonic() > deadline:
                    raise TimeoutError("the engine never connected") from e
                time.sleep(0.01)

    def request(self, msg_type: str, content: dict, metadata: dict | None = None,
                buffers: list[bytes] = ()) -> tuple[str, list[bytes]]:
        h = header(msg_type)
        parts = [json.dumps(x).encode() for x in (h, {}, metadata or {}, content)]
        return h["msg_id"], envelope(self.key, parts, list(buffers))

    def replies(self, channel: str, timeout: float):
        """Yields `(header, parent, content, buffers)` of replies until `timeout` passes."""
        sock = self.sockets[channel]
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(int(left * 1000) + 1):
                return
            frames = sock.recv_multipart()
            d = frames.index(DELIM)
            assert hmac.compare_digest(frames[d + 1], sign(self.key, frames[d + 2:d + 6]))
            yield (json.loads(frames[d + 2]), json.loads(frames[d + 3]),
                   json.loads(frames[d + 5]), frames[d + 6:])

    def reply_to(self, channel: str, msg_id: str, timeout: float = 30.0):
        """The reply whose parent is `msg_id`; other replies are collected in `self.seen`."""
        for h, parent, content, buffers in self.replies(channel, timeout):
            if parent.get("msg_id") == msg_id:
                return h, content, buffers
            self.seen.setdefault(parent.get("msg_id"), []).append((channel, h, content))
        raise TimeoutError(f"no reply to {msg_id} on {channel} within {timeout} s\n{self.log()}")

    def close(self):
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)
        if self._hub.is_alive():
            self._hub.join(5)
        for s in self.sockets.values():
            s.close(0)
        self.ctx.term()
