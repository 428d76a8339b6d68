"""The engine's IPython shell, seen on the wire: raw `execute_request`s sent to a REAL corral
engine by a fake controller (tests/engine/fake_hub.py), and what comes back on IOPub and as
the reply, compared with what a stock ipyparallel engine sends (crates/wire/tests/vectors).
"""

from __future__ import annotations

import base64
import hmac
import json
import time

import pytest

from fake_hub import DELIM, FakeHub, sign


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = FakeHub(tmp_path_factory.mktemp("ishell"))
    h.start_engine()
    try:
        _wait_for_iopub(h)
        yield h
    finally:
        h.close()


def _wait_for_iopub(hub: FakeHub, timeout: float = 30.0) -> None:
    """IOPub is PUB/SUB: what the engine publishes before its XPUB has seen the fake
    controller's subscription is lost. Execute until an `execute_input` comes through."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg_id, frames = hub.request("execute_request", {"code": "pass", "silent": False})
        hub.send("mux", frames)
        hub.reply_to("mux", msg_id)
        try:
            if of_type(iopub_for(hub, msg_id, timeout=1.0), "execute_input"):
                return
        except TimeoutError:
            pass
    raise TimeoutError(f"no IOPub from the engine within {timeout} s\n{hub.log()}")


def iopub_for(hub: FakeHub, msg_id: str, timeout: float = 30.0) -> list[tuple[bytes, dict, dict, dict]]:
    """`(topic, header, metadata, content)` of the IOPub messages of request `msg_id`, up to
    its `status: idle`."""
    sock = hub.sockets["iopub"]
    out = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not sock.poll(int(left * 1000) + 1):
            break
        frames = sock.recv_multipart()
        d = frames.index(DELIM)
        assert hmac.compare_digest(frames[d + 1], sign(hub.key, frames[d + 2:d + 6]))
        h, parent, md, content = (json.loads(f) for f in frames[d + 2:d + 6])
        if parent.get("msg_id") != msg_id:
            continue
        out.append((frames[0], h, md, content))
        if h["msg_type"] == "status" and content.get("execution_state") == "idle":
            return out
    raise TimeoutError(f"no idle for {msg_id}; got {out}\n{hub.log()}")


def execute(hub: FakeHub, code: str, **content):
    """Sends one execute_request; returns (reply content, IOPub messages)."""
    msg_id, frames = hub.request("execute_request", dict(code=code, **content))
    hub.send("mux", frames)
    _, reply, _ = hub.reply_to("mux", msg_id)
    return reply, iopub_for(hub, msg_id)


def of_type(msgs, msg_type: str):
    return [m for m in msgs if m[1]["msg_type"] == msg_type]


def test_execute_result_input_and_reply_as_a_stock_engine(hub):
    reply, msgs = execute(hub, "a = 5\nprint('a is', a)\na * 2", silent=False)
    assert [m[1]["msg_type"] for m in msgs] == [
        "status", "execute_input", "stream", "execute_result", "status"]
    count = reply["execution_count"]
    assert reply == {"status": "ok", "execution_count": count, "user_expressions": {},
                     "payload": []}
    topic, _, md, content = of_type(msgs, "execute_input")[0]
    assert topic == b"engine.0.execute_input" and md == {"engine": hub.engine_uuid.decode()}
    assert content["code"].startswith("a = 5")
    topic, _, md, content = of_type(msgs, "execute_result")[0]
    assert topic == b"engine.0.execute_result" and md == {}
    assert content == {"data": {"text/plain": "10"}, "metadata": {}, "execution_count": count}


def test_magics_shell_lines_and_get_ipython(hub):
    reply, msgs = execute(hub, "%config\nx = !echo from-a-shell\nip = get_ipython()\n"
                               "print(x, type(ip).__name__)", silent=False)
    assert reply["status"] == "ok", reply
    text = "".join(m[3]["text"] for m in of_type(msgs, "stream"))
    assert "['from-a-shell'] EngineShell" in text
    reply, msgs = execute(hub, "%whos", silent=False)
    text = "".join(m[3]["text"] for m in of_type(msgs, "stream"))
    assert "Variable" in text and "int" in text, text


def test_display_and_clear_output_are_displaypub_messages(hub):
    reply, msgs = execute(
        hub, "from IPython.display import display, HTML, clear_output\n"
             "display(HTML('<b>x</b>'))\nclear_output(wait=True)\nprint('after')")
    assert reply["status"] == "ok", reply
    kinds = [(m[0], m[1]["msg_type"]) for m in msgs
             if m[1]["msg_type"] not in ("status", "execute_input")]
    assert kinds == [(b"engine.0.displaypub", "display_data"),
                     (b"engine.0.displaypub", "clear_output"),
                     (b"engine.0.stdout", "stream")]
    display = of_type(msgs, "display_data")[0][3]
    assert display["data"]["text/html"] == "<b>x</b>"
    assert display["data"]["text/plain"] == "<IPython.core.display.HTML object>"
    assert display["transient"] == {} and display["metadata"] == {}
    assert of_type(msgs, "clear_output")[0][3] == {"wait": True}


def test_rich_execute_result_carries_every_representation(hub):
    reply, msgs = execute(hub, "from IPython.display import Image\n"
                               "Image(data=b'garbage', format='png', width=10)", silent=False)
    assert reply["status"] == "ok", reply
    content = of_type(msgs, "execute_result")[0][3]
    assert content["data"]["image/png"] == base64.b64encode(b"garbage").decode()
    assert content["metadata"] == {"image/png": {"width": 10}}


def test_inline_matplotlib_figure_arrives_as_png(hub):
    reply, _ = execute(hub, "%matplotlib inline\nimport matplotlib.pyplot as plt")
    assert reply["status"] == "ok", reply
    reply, msgs = execute(hub, "plt.plot([1, 3, 2]);", silent=False)
    assert reply["status"] == "ok", reply
    figures = [m[3]["data"] for m in of_type(msgs, "display_data")]
    assert len(figures) == 1 and "image/png" in figures[0]
    assert base64.b64decode(figures[0]["image/png"]).startswith(b"\x89PNG")


def test_error_reply_and_error_message_as_a_stock_engine(hub):
    reply, msgs = execute(hub, "1/0", silent=False)
    assert list(reply) == ["status", "traceback", "ename", "evalue", "engine_info",
                           "execution_count", "user_expressions", "payload"]
    assert reply["status"] == "error" and reply["ename"] == "ZeroDivisionError"
    assert reply["evalue"] == "division by zero"
    assert reply["engine_info"] == {"engine_uuid": hub.engine_uuid.decode(), "engine_id": 0,
                                    "method": "execute"}
    topic, _, md, error = of_type(msgs, "error")[0]
    assert topic == b"engine.0.error" and md == {"engine": hub.engine_uuid.decode()}
    assert error == {"traceback": reply["traceback"], "ename": "ZeroDivisionError",
                     "evalue": "division by zero"}
    assert "ZeroDivisionError" in reply["traceback"][-1]
    # A syntax error is an error reply too, and the engine serves on.
    reply, _ = execute(hub, "def (:")
    assert reply["status"] == "error" and reply["ename"] == "SyntaxError"
    reply, _ = execute(hub, "2 + 2", silent=False)
    assert reply["status"] == "ok"


def test_user_expressions_silent_and_store_history(hub):
    execute(hub, "y = 21")
    reply, _ = execute(hub, "pass", user_expressions={"double": "y * 2", "bad": "1/0"})
    assert reply["user_expressions"]["double"] == {
        "status": "ok", "data": {"text/plain": "42"}, "metadata": {}}
    assert reply["user_expressions"]["bad"]["status"] == "error"
    assert reply["user_expressions"]["bad"]["ename"] == "ZeroDivisionError"

    before, _ = execute(hub, "1", silent=False)
    reply, msgs = execute(hub, "y", silent=True)
    # silent: no execute_input, no execute_result, the count does not move.
    assert [m[1]["msg_type"] for m in msgs] == ["status", "status"]
    assert reply["execution_count"] == before["execution_count"]
    reply, msgs = execute(hub, "y", store_history=False)
    assert reply["execution_count"] == before["execution_count"]
    assert of_type(msgs, "execute_input") and of_type(msgs, "execute_result")
    after, _ = execute(hub, "1", silent=False)
    assert after["execution_count"] == before["execution_count"] + 1


def test_apply_sees_get_ipython_and_can_display(hub):
    """apply's namespace is the shell's: what execute defined, apply sees, and display()
    works inside a function."""
    import cloudpickle

    from corral.serialize import pack_apply_message

    execute(hub, "shared = 'from execute'")

    def show():
        from IPython import get_ipython
        from IPython.display import display

        display({"a": 1}, raw=False)
        return get_ipython().user_ns["shared"]

    show.__module__ = "__main__"
    frames = pack_apply_message(show, (), {})
    msg_id, env = hub.request("apply_request", {}, buffers=frames)
    hub.send("mux", env)
    _, reply, buffers = hub.reply_to("mux", msg_id)
    assert reply["status"] == "ok", reply
    assert cloudpickle.loads(buffers[0]) == "from execute"
    msgs = iopub_for(hub, msg_id)
    displays = of_type(msgs, "display_data")
    assert displays and displays[0][3]["data"]["text/plain"] == "{'a': 1}"


def test_clear_request_resets_the_shell_namespace(hub):
    execute(hub, "gone = 1")
    msg_id, frames = hub.request("clear_request", {})
    hub.send("control", frames)
    _, reply, _ = hub.reply_to("control", msg_id)
    assert reply["status"] == "ok"
    reply, _ = execute(hub, "gone")
    assert reply["ename"] == "NameError"
    reply, _ = execute(hub, "get_ipython() is not None", silent=False)
    assert reply["status"] == "ok"


def test_a_failed_execute_aborts_the_executes_queued_behind_it(hub):
    """ipykernel's stop_on_error: what is already queued behind a failing non-silent
    execute is answered `aborted`; `stop_on_error: false` or a silent execute runs on."""
    def run_two(first_code: str, **first):
        a, fa = hub.request("execute_request", dict(code=first_code, **first))
        b, fb = hub.request("execute_request", {"code": "ran_after = True"})
        hub.send("mux", fa)
        hub.send("mux", fb)
        _, ra, _ = hub.reply_to("mux", a)
        _, rb, _ = hub.reply_to("mux", b)
        return ra, rb

    execute(hub, "ran_after = False")
    failed, queued = run_two("import time; time.sleep(1); 1/0")
    assert failed["ename"] == "ZeroDivisionError" and queued == {"status": "aborted"}
    reply, _ = execute(hub, "pass", user_expressions={"r": "ran_after"})
    assert reply["user_expressions"]["r"]["data"]["text/plain"] == "False"
    for kwargs in ({"stop_on_error": False}, {"silent": True}):
        failed, queued = run_two("import time; time.sleep(1); 1/0", **kwargs)
        assert failed["status"] == "error" and queued["status"] == "ok", kwargs


def test_shell_config_on_the_command_line(tmp_path):
    """`--InteractiveShell.colors=nocolor`, as ipyparallel's launchers pass it to ipengine:
    tracebacks come without ANSI colors."""
    h = FakeHub(tmp_path)
    h.start_engine("--InteractiveShell.colors=nocolor")
    try:
        _wait_for_iopub(h)
        reply, _ = execute(h, "raise RuntimeError('oops')")
        assert reply["traceback"][-1] == "RuntimeError: oops", reply["traceback"]
        assert not any("\x1b[" in line for line in reply["traceback"])
    finally:
        h.close()
