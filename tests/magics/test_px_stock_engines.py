"""The parallel magics and rich output with engines that are IPython kernels: a corral
client and controller with stock ``ipengine``s (display outputs grouped three ways,
``%matplotlib inline`` figures, ExecuteReply's rich reprs, ``send_signal`` and Ctrl-C in
a blocking ``%%px``)."""

from __future__ import annotations

import base64
import re
import signal
import time

import pytest
from IPython.utils.capture import capture_output

import corral

pytest.importorskip("ipyparallel")

# Each engine prints twice to each stream, displays two rich objects and ends on a third.
RICH_CELL = """\
import sys
from IPython.display import HTML, Math, display
print("stdout")
print("stdout2")
print("stderr", file=sys.stderr)
print("stderr2", file=sys.stderr)
display(HTML("<b>bold</b>"))
display(Math(r"\\alpha"))
Math(r"\\beta")
"""

HTML_TEXT = r"<IPython\.core\.display\.HTML object>"
MATH_TEXT = r"<IPython\.core\.display\.Math object>"


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def assert_lines(text: str, patterns: list[str]) -> None:
    lines = plain(text).splitlines()
    assert len(lines) == len(patterns), text
    for line, pattern in zip(lines, patterns):
        assert re.search(pattern, line), f"{pattern!r} not in {line!r}\n{text}"


@pytest.fixture
def px(shell, stock_cluster):
    client = stock_cluster(2)  # made inside IPython: %px runs on its engines
    return shell, client


STDERR = [r"^\[stderr:0\] $", "^stderr$", "^stderr2$", r"^\[stderr:1\] $", "^stderr$", "^stderr2$"]


def test_group_outputs_type(px):
    ip, _ = px
    with capture_output(display=False) as io:
        ip.run_cell_magic("px", "--no-stream", RICH_CELL)
    assert_lines(io.stdout, [
        r"^\[stdout:0\] $", "^stdout$", "^stdout2$", r"^\[stdout:1\] $", "^stdout$", "^stdout2$",
        r"^\[output:0\]$", HTML_TEXT, MATH_TEXT, r"^\[output:1\]$", HTML_TEXT, MATH_TEXT,
        r"^Out\[0:\d+\]: " + MATH_TEXT, r"^Out\[1:\d+\]: " + MATH_TEXT,
    ])
    assert_lines(io.stderr, STDERR)


def test_group_outputs_engine(px):
    ip, _ = px
    with capture_output(display=False) as io:
        ip.run_cell_magic("px", "--group-outputs=engine --no-stream", RICH_CELL)
    expected = []
    for eid in (0, 1):
        expected += [rf"^\[stdout:{eid}\] $", "^stdout$", "^stdout2$", rf"^\[output:{eid}\]$",
                     HTML_TEXT, MATH_TEXT, rf"^Out\[{eid}:\d+\]: " + MATH_TEXT]
    assert_lines(io.stdout, expected)
    assert_lines(io.stderr, STDERR)


def test_group_outputs_order(px):
    ip, _ = px
    with capture_output(display=False) as io:
        ip.run_cell_magic("px", "-r --no-stream", RICH_CELL)
    assert_lines(io.stdout, [
        r"^\[stdout:0\] $", "^stdout$", "^stdout2$", r"^\[stdout:1\] $", "^stdout$", "^stdout2$",
        r"^\[output:0\]$", HTML_TEXT, r"^\[output:1\]$", HTML_TEXT,
        r"^\[output:0\]$", MATH_TEXT, r"^\[output:1\]$", MATH_TEXT,
        r"^Out\[0:\d+\]: " + MATH_TEXT, r"^Out\[1:\d+\]: " + MATH_TEXT,
    ])


def test_rich_outputs_reach_the_notebook_display_tagged_with_their_engine(px):
    ip, client = px
    with capture_output() as io:  # display=True: what a notebook would render
        ip.run_cell_magic("px", "--no-stream -o ar", RICH_CELL)
    html = [o for o in io.outputs if "text/html" in o.data]
    assert [o.data["text/html"] for o in html] == ["<b>bold</b>"] * 2
    assert sorted(o.metadata["engine"] for o in html) == [0, 1]
    latex = [o.data["text/latex"] for o in io.outputs if "text/latex" in o.data]
    assert latex.count(r"$\displaystyle \alpha$") == 2 and len(latex) == 4  # 2 displays + 2 Out
    ar = ip.user_ns["ar"]
    assert [len(outputs) for outputs in ar.outputs] == [2, 2]
    assert ar.outputs[0][0]["data"]["text/html"] == "<b>bold</b>"
    replies = ar.get()
    assert replies[0]._repr_latex_() == r"$\displaystyle \beta$"
    assert replies[0].execute_result["data"]["text/latex"] == r"$\displaystyle \beta$"


def test_stream_shows_rich_output_too(px):
    ip, _ = px
    with capture_output() as io:
        ip.run_cell_magic("px", "--stream", RICH_CELL)
    out = plain(io.stdout)
    assert out.count("stdout2") == 2 and "[stdout:0]" in out and "[stdout:1]" in out
    assert plain(io.stderr).count("stderr2") == 2
    assert sum("text/html" in o.data for o in io.outputs) == 2
    assert sum("Out[" in o.data.get("text/plain", "") for o in io.outputs) == 2


def test_matplotlib_inline_figure_arrives_as_a_png(px):
    ip, _ = px
    ip.run_line_magic("px", "%matplotlib inline")
    with capture_output() as io:
        ip.run_cell_magic("px", "--no-stream -o ar",
                          "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2]);")
    pngs = [o for o in io.outputs if "image/png" in o.data]
    assert sorted(o.metadata["engine"] for o in pngs) == [0, 1]
    assert all(base64.b64decode(o.data["image/png"]).startswith(b"\x89PNG") for o in pngs)
    assert all("image/png" in outputs[0]["data"] for outputs in ip.user_ns["ar"].outputs)


def test_send_signal_interrupts_the_running_task_and_the_engines_live_on(px):
    _, client = px
    dv = client[:]
    ar = dv.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(60)", block=False)
    deadline = time.monotonic() + 30
    while not all("sleeping" in out for out in ar.stdout):
        assert time.monotonic() < deadline, "the engines did not start the task"
        time.sleep(0.05)
    assert client.send_signal("SIGINT", block=True) is None
    with pytest.raises(corral.CompositeError) as info:
        ar.get(timeout=20)
    assert [e[0] for e in info.value.elist] == ["KeyboardInterrupt"] * 2
    ack = client.send_signal(signal.SIGCONT, targets=0)  # a number works too
    assert ack.get(timeout=10) is None
    assert dv.apply_sync(lambda: "alive") == ["alive", "alive"]
    with pytest.raises(TypeError):
        client.send_signal(None)


def test_ctrl_c_during_a_blocking_px_interrupts_the_engines(px):
    ip, client = px

    def ctrl_c(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, ctrl_c)
    try:
        signal.setitimer(signal.ITIMER_REAL, 2.0)
        t0 = time.monotonic()
        with capture_output(display=False) as io:
            ip.run_cell_magic("px", "--progress-after -1",
                              "print('Entering...', flush=True)\nimport time\n"
                              "time.sleep(30)\nprint('Exiting...')")
        elapsed = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert "Received Keyboard Interrupt. Sending signal SIGINT to engines..." in io.stderr
    assert plain(io.stdout).count("Entering...") == 2
    assert "Exiting..." not in io.stdout
    assert elapsed < 20, "the engines were not interrupted"
    assert client[:].apply_sync(lambda: "alive") == ["alive", "alive"]
