"""Garbage on every socket of a running corral controller: dropped, logged, still serving."""

import json

import zmq

import corral


def test_controller_survives_malformed_messages(start_cluster):
    cluster, client = start_cluster(1)
    ctx = zmq.Context.instance()
    files = [cluster.client_file, cluster.engine_file]
    ports = []
    for f in files:
        info = json.loads(f.read_text())
        for key, value in info.items():
            if key in ("registration", "control", "mux", "task", "iopub", "hb_pong", "broadcast"):
                ports.extend(value if isinstance(value, list) else [value])
    garbage = [
        [b"<IDS|MSG>", b"deadbeef", b"{}", b"{}", b"{}", b"{}"],  # bad signature
        [b"<IDS|MSG>", b"", b"{}", b"{}", b"{}", b"{}"],  # unsigned
        [b"<IDS|MSG>", b"sig"],  # truncated
        [b"not a message at all"],
        [b"\xff\xfe", b"<IDS|MSG>", b"x", b"\x00not json", b"{", b"[", b"]"],
    ]
    socks = []
    for port in sorted(set(ports)):
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(f"tcp://127.0.0.1:{port}")
        for frames in garbage:
            s.send_multipart(frames)
        socks.append(s)
    # A peer that speaks only garbage on the engines' IOPub port too.
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.connect(f"tcp://127.0.0.1:{json.loads(cluster.engine_file.read_text())['iopub']}")
    for frames in garbage:
        pub.send_multipart(frames)
    socks.append(pub)

    # Still serving: a new client connects, work runs, data is published.
    assert client[0].apply_sync(lambda: 41 + 1) == 42
    fresh = corral.Client(url_file=str(cluster.client_file))
    assert fresh.ids == [0]
    fresh.close()
    for s in socks:
        s.close()
    assert cluster.controller.running()
    log = cluster.controller.log_path.read_text(errors="replace").lower()
    assert "signature" in log or "drop" in log
