"""The engine's IPython shell through a STOCK ipyparallel client and controller: what
ipyparallel users do with `execute` (magics, display, rich results, inline figures)."""

from __future__ import annotations

import pytest

ipp = pytest.importorskip("ipyparallel")


def interactive(f):
    """Stock ipyparallel runs a `__main__` function in the engine's namespace."""
    f.__module__ = "__main__"
    return f


def test_execute_magic_and_shell_escape(cluster):
    client, _, _ = cluster
    view = client[:]
    view.execute("a = 5", block=True)
    ar = view.execute("%whos\nout = !echo hi", block=True)
    for stdout in ar.stdout:
        assert any(line.split() == ["a", "int", "5"] for line in stdout.splitlines()), stdout
    assert view["out"] == [["hi"], ["hi"]]


def test_execute_display_reaches_outputs(cluster):
    client, _, _ = cluster
    view = client[:]
    view.execute("from IPython.display import display")
    ar = view.execute("[display(i) for i in range(3)];", block=True)
    for outputs in ar.outputs:
        assert [o["data"] for o in outputs] == [{"text/plain": str(i)} for i in range(3)]


def test_apply_can_display(cluster):
    client, _, _ = cluster

    @interactive
    def show():
        from IPython.display import HTML, display

        display(HTML("<i>hi</i>"))
        return get_ipython().__class__.__name__  # noqa: F821

    ar = client[0].apply_async(show)
    assert ar.get(timeout=20) == "EngineShell"
    assert ar.wait_for_output(10)
    assert ar.outputs[0]["data"]["text/html"] == "<i>hi</i>"


def test_execute_reply_rich(cluster):
    client, _, _ = cluster
    e0 = client[0]
    e0.execute("from IPython.display import HTML", block=True)
    ar = e0.execute("HTML('<b>bold</b>')", silent=False)
    reply = ar.get(timeout=20)
    assert ar.wait_for_output(10)
    assert reply._repr_html_() == "<b>bold</b>"


def test_inline_matplotlib_figure_is_png(cluster):
    client, _, _ = cluster
    e0 = client[0]
    e0.execute("%matplotlib inline\nimport matplotlib.pyplot as plt", block=True)
    ar = e0.execute("plt.plot([1, 2, 3]);", silent=False)
    reply = ar.get(timeout=30)
    assert ar.wait_for_output(10)
    assert len(reply.outputs) == 1 and "image/png" in reply.outputs[0]["data"]


def test_execute_error_is_remote_error(cluster):
    client, _, _ = cluster
    with pytest.raises(ipp.error.RemoteError) as info:
        client[0].execute("1/0").get(timeout=20)
    assert info.value.ename == "ZeroDivisionError"
    client[0].execute("b = 1").get(timeout=20)  # the engine serves on
