"""A REAL corral engine process against the fake controller: a replayed signed request runs
once; an empty cluster key is refused unless the user opts in."""

from __future__ import annotations

import operator

import pytest

from corral.serialize import deserialize_object, pack_apply_message
from fake_hub import FakeHub


@pytest.fixture
def hub(tmp_path):
    h = FakeHub(tmp_path)
    yield h
    h.close()


def test_replayed_execute_request_runs_once(hub, tmp_path):
    hub.start_engine()
    marker = tmp_path / "ran.txt"
    code = f"open({str(marker)!r}, 'a').write('x')"
    msg_id, frames = hub.request("execute_request", {"code": code, "silent": False})
    hub.send("mux", frames)
    hub.send("mux", frames)  # the same signed bytes again
    _, first, _ = hub.reply_to("mux", msg_id)
    assert first["status"] == "ok", first
    hub.send("control", frames)  # and on the other socket

    then_id, then = hub.request("execute_request", {"code": "1"})
    hub.send("mux", then)
    _, after, _ = hub.reply_to("mux", then_id)
    assert after["execution_count"] == 2, "the replay was executed"
    assert marker.read_text() == "x"
    assert msg_id not in hub.seen, "a replay was answered"
    assert not list(hub.replies("control", 0.5)), "the replay on control was answered"
    assert hub.log().count("replayed message") == 2


def test_replayed_apply_request_runs_once(hub):
    hub.start_engine()
    setup_id, setup = hub.request("execute_request", {"code": "import itertools; tick = itertools.count(1)"})
    hub.send("mux", setup)
    hub.reply_to("mux", setup_id)
    # `next(tick)` through apply: a side effect the replies show.
    code_id, frames = hub.request("execute_request", {"code": "next(tick)"})
    hub.send("mux", frames)
    hub.send("mux", frames)
    hub.reply_to("mux", code_id)
    msg_id, apply = hub.request("apply_request", {}, {}, pack_apply_message(operator.add, (1, 2)))
    hub.send("mux", apply)
    hub.send("mux", apply)
    _, content, bufs = hub.reply_to("mux", msg_id)
    assert content["status"] == "ok" and deserialize_object(bufs)[0] == 3
    check_id, check = hub.request("execute_request", {"code": "assert next(tick) == 2, 'replayed'"})
    hub.send("mux", check)
    _, result, _ = hub.reply_to("mux", check_id)
    assert result["status"] == "ok", result
    assert code_id not in hub.seen and msg_id not in hub.seen


def test_empty_key_is_refused_with_a_clear_message(tmp_path):
    hub = FakeHub(tmp_path, key=b"")
    try:
        proc = hub.start_engine(wait=False)
        assert proc.wait(60) == 1
        log = hub.log()
        assert "empty" in log and "--insecure" in log and "CORRAL_INSECURE=1" in log, log
        assert hub.engine_uuid is None, "it registered anyway"
    finally:
        hub.close()


@pytest.mark.parametrize("opt_in", [("--insecure",), ()])
def test_empty_key_runs_when_opted_in_and_warns(tmp_path, opt_in):
    hub = FakeHub(tmp_path, key=b"")
    try:
        env = {} if opt_in else {"CORRAL_INSECURE": "1"}
        hub.start_engine(*opt_in, env=env)
        msg_id, frames = hub.request("apply_request", {}, {}, pack_apply_message(operator.mul, (6, 7)))
        hub.send("mux", frames)
        _, content, bufs = hub.reply_to("mux", msg_id)
        assert content["status"] == "ok" and deserialize_object(bufs)[0] == 42
        assert "INSECURE" in hub.log()
    finally:
        hub.close()
