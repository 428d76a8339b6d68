"""The parallel magics, driven from a real IPython shell, on a corral cluster (corral
controller and engines): text output, errors, targets, --save-name, %autopx, %pxresult,
%pxconfig, and execute's ExecuteReply results."""

from __future__ import annotations

import re
import time

import pytest
from IPython.utils.capture import capture_output

import corral


def plain(text: str) -> str:
    """Text without terminal colors."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.fixture
def px(shell, start_cluster):
    """(shell, client) with a 2-engine corral cluster whose client was made inside IPython."""
    _, client = start_cluster(2)
    return shell, client


def test_a_client_made_in_ipython_registers_px_on_all_engines(px):
    ip, client = px
    ip.run_line_magic("px", "a = 5")
    assert client[:]["a"] == [5, 5]
    ip.run_cell_magic("px", "", "b = a * 2\nc = f'{b}!'")  # {b} stays for the engines
    assert client[:]["c"] == ["10!", "10!"]


def test_px_shows_each_engines_stdout_under_its_header(px):
    ip, client = px
    client[:].scatter("rank", [0, 1], flatten=True, block=True)
    with capture_output(display=False) as io:
        ip.run_cell_magic("px", "--no-stream", "print('out', rank)\nprint('more', rank)")
    out = io.stdout
    assert "\n\n" not in out
    assert out == ("[stdout:0] \nout 0\nmore 0\n"
                   "[stdout:1] \nout 1\nmore 1\n"), out


def test_px_stream_shows_output_while_the_cell_runs(px, monkeypatch):
    """With --stream, the first print is shown while the engines still sleep."""
    ip, client = px
    written = []

    class Recorder:
        def write(self, text):
            written.append((time.monotonic(), text))

        def flush(self):
            pass

    monkeypatch.setattr("sys.stdout", Recorder())
    ip.run_cell_magic("px", "--stream --progress-after -1",
                      "import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second')")
    monkeypatch.undo()
    text = "".join(t for _, t in written)
    assert text.count("first") == 2 and text.count("second") == 2, text
    t_first = max(t for t, s in written if "first" in s)
    t_second = min(t for t, s in written if "second" in s)
    assert t_second - t_first > 1.5, "the first lines were not shown before the cell ended"


def test_px_errors_raise_a_composite_error_with_every_engines_traceback(px):
    ip, client = px
    client[:].scatter("rank", [0, 1], flatten=True, block=True)
    with capture_output(display=False) as io:
        with pytest.raises(corral.CompositeError) as info:
            ip.run_cell_magic("px", "--no-stream", "print('before')\n1 / (rank - rank)")
    assert "[stdout:0]" in io.stdout and "[stdout:1]" in io.stdout, "output shown first"
    assert io.stderr.strip() == ""
    tb = "\n".join(info.value.render_traceback())
    assert tb.count("ZeroDivisionError") >= 2
    assert "[0:execute]" in tb and "[1:execute]" in tb


def test_px_stream_shows_tracebacks_once_then_raises_already_displayed(px):
    ip, _ = px
    with capture_output(display=False) as io:
        with pytest.raises(corral.error.AlreadyDisplayedError) as info:
            ip.run_cell_magic("px", "--stream", "raise RuntimeError('oops')")
    # Each engine's traceback shown exactly once (IPython's, so it names the error more
    # than once: count the engine headers and the final line).
    shown = plain(io.stderr)
    assert shown.count("[0:execute]") == 1 and shown.count("[1:execute]") == 1, shown
    assert shown.count("RuntimeError: oops") == 2, shown
    assert info.value.render_traceback() == ["2 errors"]
    assert isinstance(info.value, corral.CompositeError)


def test_targets_option_runs_there_and_leaves_the_default_alone(px):
    ip, client = px
    view = ip.magics_manager.magics["line"]["px"].__self__.view
    assert view.targets == "all"
    ip.run_cell_magic("px", "--targets 1", "where = 'one'")
    ip.run_cell_magic("px", "--targets ::2", "where = 'even'")
    assert client[:]["where"] == ["even", "one"]
    ip.run_cell_magic("px", "-t [0,1]", "where = 'both'")
    assert client[:]["where"] == ["both", "both"]
    assert view.targets == "all"
    with pytest.raises(Exception, match="--targets 'nope'"):
        ip.run_cell_magic("px", "--targets nope", "pass")


def test_save_name_and_noblock_keep_the_async_result(px):
    ip, _ = px
    ar = ip.run_cell_magic("px", "--noblock --save-name job", "import time; time.sleep(0.2); 7")
    assert isinstance(ar, corral.AsyncResult)
    assert ip.user_ns["job"] is ar
    replies = ar.get(timeout=30)
    assert [r.execute_result["data"]["text/plain"] for r in replies] == ["7", "7"]
    ip.run_cell_magic("px", "-o other", "8")
    assert ip.user_ns["other"].get()[0].execute_result["data"]["text/plain"] == "8"


def test_pxresult_shows_the_last_nonblocking_result(px):
    ip, client = px
    client[:].push({"a": 111}, block=True)
    ip.run_line_magic("pxconfig", "--noblock")
    ar = ip.run_line_magic("px", "a")
    assert isinstance(ar, corral.AsyncResult)
    with capture_output(display=False) as io:
        ip.run_line_magic("pxresult", "")
    assert plain(io.stdout).count(": 111") == 2
    assert "Out[0:" in plain(io.stdout) and "Out[1:" in plain(io.stdout)
    with capture_output(display=False) as io:
        ip.run_line_magic("result", "")  # the older name
    assert plain(io.stdout).count(": 111") == 2


def test_pxresult_before_any_px_says_so(shell, start_cluster):
    start_cluster(1)
    with pytest.raises(Exception, match="no %px has run yet"):
        shell.run_line_magic("pxresult", "")


def test_pxconfig_sets_targets_blocking_and_verbosity(px):
    ip, client = px
    view = client.activate(1, "_one")
    assert view.targets == 1 and view.block is True
    ip.run_line_magic("pxconfig_one", "-t :")
    assert view.targets == client.ids
    ip.run_line_magic("pxconfig_one", "-t -1")
    assert view.targets == client.ids[-1]
    ip.run_line_magic("pxconfig_one", "--noblock")
    assert view.block is False
    ip.run_line_magic("pxconfig_one", "--block --verbose")
    with capture_output(display=False) as io:
        ip.run_line_magic("px_one", "x = 1")
    assert io.stdout.startswith("Parallel execution on engine(s): 1"), io.stdout
    with capture_output(display=False) as io:
        ip.run_cell_magic("px_one", "--noblock", "x = 2")
    assert io.stdout.startswith("Async parallel execution"), io.stdout
    # The unsuffixed magics still run on every engine.
    ip.run_line_magic("px", "y = 3")
    assert client[:]["y"] == [3, 3]


def test_autopx_sends_every_cell_until_switched_off(px):
    ip, client = px
    view = client[1]
    view.block = True
    view.activate("_1")
    with capture_output(display=False) as io:
        ip.run_line_magic("autopx_1", "")
        ip.run_cell("a = 5\nb = 12345\nc = 0")
        ip.run_cell("b *= 2")
        ip.run_cell("print(b)")
        ip.run_cell("b")
        ip.run_cell("b / c")
        ip.run_cell("%autopx_1")
    out = plain(io.stdout)
    assert out.startswith("%autopx enabled"), out
    assert out.rstrip().endswith("%autopx disabled"), out
    assert "24690" in out and "Out[1:" in out
    assert "ZeroDivisionError" in out
    assert "a" not in ip.user_ns, "the cells ran on the engine, not here"
    assert client[1]["b"] == 24690
    ip.run_cell("here = 1")
    assert ip.user_ns["here"] == 1, "after %autopx, cells run here again"


def test_local_runs_the_cell_here_too(px):
    ip, client = px
    ip.run_cell_magic("px", "--local", "both = 42")
    assert ip.user_ns["both"] == 42
    assert client[:]["both"] == [42, 42]


def test_execute_returns_execute_replies_with_the_result_and_outputs(start_cluster):
    _, client = start_cluster(2)
    dv = client[:]
    replies = dv.execute("x = 3\nprint('hi')\nx * 2", silent=False, block=True)
    assert len(replies) == 2
    for eid, reply in zip(client.ids, replies):
        assert isinstance(reply, corral.client.execute_reply.ExecuteReply)
        assert reply.execute_result["data"]["text/plain"] == "6"
        assert isinstance(reply.execution_count, int) and reply.execution_count >= 1
        assert reply["stdout"] == "hi\n" and reply.engine_id == eid
        assert reply._plaintext() == f"Out[{eid}:{reply.execution_count}]: 6"
        assert repr(reply) == f"<ExecuteReply[{reply.execution_count}]: 6>"
        assert reply._repr_mimebundle_()[0]["text/plain"] == reply._plaintext()
    ar = client[0].execute("2 + 2", silent=False)
    assert ar.get(timeout=30).execute_result["data"]["text/plain"] == "4"
    assert ar.execute_result["data"]["text/plain"] == "4"
    assert ar.execute_input == "2 + 2"
    assert ar.outputs == []
    # A statement has no result.
    assert client[0].execute("y = 1", block=True).execute_result is None


def test_load_ext_corral_registers_px_before_any_client(shell):
    from IPython.core.error import UsageError

    shell.run_line_magic("load_ext", "corral")
    magics = shell.magics_manager.magics["line"]["px"].__self__
    assert magics.view is None
    with pytest.raises(UsageError, match="found no cluster"):
        shell.run_line_magic("px", "a = 1")
    # The default profile (of this test's IPYTHONDIR) gets a cluster; its client, made
    # in IPython, becomes the magics' view ...
    cluster = corral.Cluster(n=2, cluster_id="", engine_timeout=60)
    try:
        client = cluster.start_and_connect_sync()
        assert magics.view.client is client and magics.view.block is True
        shell.run_line_magic("px", "a = 1")
        assert client[:]["a"] == [1, 1]
        # ... and without one, the first %px connects to that cluster by itself.
        magics.view = None
        shell.run_line_magic("px", "a = 2")
        assert magics.view.client is not client
        assert client[:]["a"] == [2, 2]
        magics.view.client.close()
    finally:
        cluster.stop_cluster_sync()
