"""A minimal fake controller + engine (pyzmq) for measuring the client's intake.

It answers ``connection_request`` with one engine, and for each ``apply_request`` on the
mux socket publishes ``n`` ``data_message``s (``{"i": k}``) on IOPub as fast as pyzmq
can, then the reply and ``status: idle`` — what a fast engine would do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
import threading
import time
import uuid
from pathlib import Path

import zmq

ENGINE = "fake-engine-" + uuid.uuid4().hex[:8]


class FakeController:
    def __init__(self, profile_dir: Path, n_updates: int):
        self.key = uuid.uuid4().hex.encode()
        self.n = n_updates
        self.ctx = zmq.Context()
        self.reg = self.ctx.socket(zmq.ROUTER)
        self.mux = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.sndhwm = 0
        ports = {}
        for name, s in (("registration", self.reg), ("mux", self.mux), ("iopub", self.pub)):
            ports[name] = s.bind_to_random_port("tcp://127.0.0.1")
        # Unused channels: bind something so the client's connects are valid.
        self.spare = []
        for name in ("control", "task", "notification", "broadcast"):
            s = self.ctx.socket(zmq.PUB if name == "notification" else zmq.ROUTER)
            ports[name] = s.bind_to_random_port("tcp://127.0.0.1")
            self.spare.append(s)
        conn = dict(ports, interface="tcp://127.0.0.1", key=self.key.decode(), ssh="",
                    location="", signature_scheme="hmac-sha256", pack="json",
                    unpack="json", task_scheme="leastload", curve_serverkey=None)
        sec = profile_dir / "security"
        sec.mkdir(parents=True, exist_ok=True)
        (sec / "ipcontroller-client.json").write_text(json.dumps(conn))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.counter = 0

    def msg(self, msg_type, parent, content, metadata=None):
        self.counter += 1
        header = {"msg_id": f"{ENGINE}_{self.counter}", "msg_type": msg_type,
                  "session": ENGINE, "username": "fake", "date": "2026-01-01T00:00:00Z",
                  "version": "5.4"}
        parts = [json.dumps(x).encode() for x in (header, parent, metadata or {}, content)]
        sig = hmac.new(self.key, b"".join(parts), hashlib.sha256).hexdigest().encode()
        return [b"<IDS|MSG>", sig, *parts]

    def run(self):
        poller = zmq.Poller()
        poller.register(self.reg, zmq.POLLIN)
        poller.register(self.mux, zmq.POLLIN)
        while not self.stop.is_set():
            for sock, _ in poller.poll(50):
                frames = sock.recv_multipart()
                d = frames.index(b"<IDS|MSG>")
                idents, header = frames[:d], json.loads(frames[d + 2])
                if sock is self.reg:
                    reply = self.msg("connection_reply", header,
                                     {"status": "ok", "engines": {"0": ENGINE}})
                    sock.send_multipart(idents + reply)
                else:
                    self.serve_apply(idents, header)

    def serve_apply(self, idents, header):
        md = {"engine": ENGINE}
        self.pub.send_multipart([b"engine.0.status"] + self.msg(
            "status", header, {"execution_state": "busy"}, md))
        # Encode first, then send as fast as pyzmq can: the flood a fast engine makes.
        flood = [
            [b"datapub"] + self.msg("data_message", header, {"keys": ["i"]}, md)
            + [pickle.dumps({"i": i})]
            for i in range(self.n)
        ]
        self.t_send = time.perf_counter()
        for frames in flood:
            self.pub.send_multipart(frames)
        self.t_sent = time.perf_counter()
        reply = self.msg("apply_reply", header, {"status": "ok"},
                         {"engine": ENGINE, "status": "ok", "started": "2026-01-01T00:00:00Z"})
        self.mux.send_multipart(idents + reply + [pickle.dumps(self.n)])
        self.pub.send_multipart([b"engine.0.status"] + self.msg(
            "status", header, {"execution_state": "idle"}, md))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        for s in [self.reg, self.mux, self.pub, *self.spare]:
            s.close(linger=0)
        self.ctx.term()
