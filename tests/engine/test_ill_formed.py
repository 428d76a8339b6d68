"""A REAL corral engine process against a fake controller (tests/engine/fake_hub.py), sent
GENERATED signed messages of every shape on shell and control: headers with fields missing
or of any type, parent/metadata/content of any JSON type or not JSON at all, buffers
missing or garbage, unknown types, bad signatures, truncated envelopes, replays. After each,
a valid apply_request must be answered correctly; every message a reply can be addressed to
gets exactly one reply (replays none), and the engine process never exits.
"""

from __future__ import annotations

import json
import operator
import pickle

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from corral.serialize import deserialize_object, pack_apply_message
from fake_hub import DELIM, FakeHub, envelope, sign

MSG_TYPES = ["apply_request", "execute_request", "abort_request", "clear_request",
             "shutdown_request", "kernel_info_request", "interrupt_request", "nonsense"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = FakeHub(tmp_path_factory.mktemp("ill_formed"))
    try:
        h.start_engine()
        yield h
    finally:
        h.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def mostly(draw, usual, other, odds: int = 4):
    """`usual` `odds` times in `odds + 1`, else `other` (one_of would weigh them evenly)."""
    return draw(usual) if draw(st.sampled_from([True] * odds + [False])) else draw(other)


@st.composite
def headers(draw):
    """Mostly header-shaped dicts with fields missing or of any type; sometimes any JSON."""
    if not draw(st.sampled_from([True] * 9 + [False])):
        return draw(json_values)
    h = {}
    fields = {
        "msg_id": st.text("0123456789abcdef-_", min_size=1, max_size=20),
        "msg_type": st.sampled_from(MSG_TYPES),
        "username": st.text(max_size=8),
        "session": st.text(max_size=8),
        "date": st.text(max_size=8),
        "version": st.just("5.4"),
    }
    for name, usual in fields.items():
        if draw(st.sampled_from([True] * 19 + [False])):  # else the field is missing
            h[name] = mostly(draw, usual, json_values, odds=6)
    return h


content_keys = st.sampled_from(["msg_ids", "restart", "code", "silent", "is_broadcast",
                                "label", "original_msg_id", "after", "follow", "targets"])
json_objects = st.dictionaries(content_keys, json_values | st.text(max_size=30), max_size=4)

#: A frame: (bytes, is_json).
frames_json = (json_values | json_objects).map(lambda v: (json.dumps(v).encode(), True))
#: Never JSON, for serde_json nor Python: not UTF-8, or text that cannot start a value.
frames_garbage = (
    st.binary(max_size=16).map(lambda b: (b"\xff" + b, False))
    | st.text(max_size=16).map(lambda t: (("#" + t).encode(), False))
    | st.just((b'{"a": \xff}', False))
)
frames = st.composite(lambda draw: mostly(draw, frames_json, frames_garbage, odds=12))()


@st.composite
def buffers(draw):
    """Missing, random bytes, or apply-shaped frames with something wrong in them."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.lists(st.binary(max_size=24), max_size=3))
    f = draw(st.sampled_from([operator.add, len, abs, max, 5, "not callable"]))
    info = draw(st.fixed_dictionaries(
        {}, optional={"nargs": st.integers(-2, 3) | json_values,
                      "narg_bufs": st.integers(-2, 3) | json_values,
                      "kw_keys": st.lists(st.text(max_size=3), max_size=2) | json_values}))
    args = draw(st.lists(st.integers() | st.text(max_size=5), max_size=3))
    frames_ = [pickle.dumps(f), pickle.dumps(info), *(pickle.dumps(a) for a in args)]
    if kind == 2:
        frames_ = pack_apply_message(f, tuple(args))
    if kind == 3 and frames_:
        i = draw(st.integers(0, len(frames_) - 1))
        frames_[i] = frames_[i][: draw(st.integers(0, max(0, len(frames_[i]) - 1)))]
    return frames_


@st.composite
def messages(draw):
    h = draw(headers())
    parts = [(json.dumps(h).encode(), True), draw(frames), draw(frames), draw(frames)]
    if not draw(st.sampled_from([True] * 19 + [False])):
        parts[0] = draw(frames_garbage)
    return {
        "channel": draw(st.sampled_from(["mux", "control"])),
        "parts": parts,
        "buffers": draw(buffers()),
        "signature": draw(st.sampled_from(["good"] * 10 + ["bad", "none"])),
        "truncate": draw(st.sampled_from([None] * 12 + [1, 3, 5])),
        "twice": draw(st.booleans()),
    }


def addressable(msg) -> str | None:
    """The msg_id the engine must answer, or None if it must drop the message."""
    (head, head_ok), *rest = msg["parts"]
    if msg["signature"] != "good" or msg["truncate"] is not None:
        return None
    if not head_ok or not all(ok for _, ok in rest):
        return None
    h = json.loads(head)
    if not isinstance(h, dict):
        return None
    if not isinstance(h.get("msg_id"), str) or not isinstance(h.get("msg_type"), str):
        return None
    return h["msg_id"]


def probe(hub: FakeHub, a: int, b: int) -> None:
    """A valid apply_request must come back with the right result."""
    msg_id, frames_ = hub.request("apply_request", {}, {}, pack_apply_message(operator.add, (a, b)))
    hub.send("mux", frames_)
    _, content, bufs = hub.reply_to("mux", msg_id)
    assert content["status"] == "ok", content
    assert deserialize_object(bufs)[0] == a + b


METADATA_NOT_AN_OBJECT = {  # the message issue 6 found fatal
    "channel": "mux",
    "parts": [(json.dumps({"msg_id": "md-list", "msg_type": "apply_request"}).encode(), True),
              (b"{}", True), (b"[1, 2]", True), (b"{}", True)],
    "buffers": pack_apply_message(operator.add, (1, 2)),
    "signature": "good", "truncate": None, "twice": False,
}


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@example(msg=METADATA_NOT_AN_OBJECT)
@example(msg=dict(METADATA_NOT_AN_OBJECT, parts=[
    (json.dumps({"msg_id": "md-str", "msg_type": "apply_request"}).encode(), True),
    (b"{}", True), (b'"a string"', True), (b"{}", True)]))
@example(msg=dict(METADATA_NOT_AN_OBJECT, buffers=[], parts=[
    (json.dumps({"msg_id": "code-int", "msg_type": "execute_request"}).encode(), True),
    (b"[]", True), (b"{}", True), (b'{"code": 5}', True)]))
@example(msg=dict(METADATA_NOT_AN_OBJECT, buffers=[], parts=[
    (json.dumps({"msg_id": "content-list", "msg_type": "execute_request"}).encode(), True),
    (b"{}", True), (b"null", True), (b'["print(1)"]', True)]))
@example(msg=dict(METADATA_NOT_AN_OBJECT, channel="control", buffers=[], parts=[
    (json.dumps({"msg_id": "ids-number", "msg_type": "abort_request"}).encode(), True),
    (b"{}", True), (b"{}", True), (b'{"msg_ids": 5}', True)]))
@given(msg=messages())
def test_engine_answers_or_drops_any_message_and_serves_on(hub, msg):
    (head, _), (parent, _), (md, _), (content, _) = msg["parts"]
    h = json.loads(head) if msg["parts"][0][1] else None
    if msg["channel"] == "control" and isinstance(h, dict) and h.get("msg_type") == "shutdown_request":
        msg["channel"] = "mux"  # a well-formed shutdown on control rightly ends the engine
    parts = [head, parent, md, content]
    signature = {"good": sign(hub.key, parts), "bad": b"0" * 64, "none": b""}[msg["signature"]]
    frames_ = [DELIM, signature, *parts, *msg["buffers"]]
    if msg["truncate"] is not None:
        frames_ = frames_[: msg["truncate"]]
    for _ in range(2 if msg["twice"] else 1):
        hub.send(msg["channel"], frames_)
    # Hypothesis may draw the same message again: then it is a replay, dropped. The engine
    # remembers a signature once it verified it (well signed and complete, any JSON).
    verified = msg["signature"] == "good" and msg["truncate"] is None
    sent = hub.__dict__.setdefault("signatures_verified", set())
    replayed = verified and signature in sent
    if verified:
        sent.add(signature)

    hub.seen.clear()
    probe(hub, 20, 22)
    assert hub.proc.poll() is None, hub.log()
    expected = None if replayed else addressable(msg)
    event("dropped" if expected is None else f"answered: {h['msg_type']} on {msg['channel']}")
    if expected is not None:
        answered = hub.seen.get(expected, [])
        if not answered:  # a control reply may trail the probe's on the other socket
            for h2, parent2, c2, _ in hub.replies(msg["channel"], 5.0):
                if parent2.get("msg_id") == expected:
                    answered.append((msg["channel"], h2, c2))
                    break
        assert len(answered) == 1, (expected, answered)
        channel, reply_header, reply_content = answered[0]
        assert channel == msg["channel"]
        assert reply_content.get("status") in ("ok", "error", "aborted"), reply_content
    else:
        assert len(hub.seen) == 0, hub.seen


def test_engine_log_names_what_it_dropped(hub):
    msg_id, frames_ = hub.request("execute_request", {"code": "1"})
    frames_[1] = b"0" * 64
    hub.send("mux", frames_)
    probe(hub, 1, 1)
    assert "dropped a request" in hub.log() and "invalid signature" in hub.log()
