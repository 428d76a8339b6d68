"""examples/live_widget.ipynb runs headlessly, and the widget state nbclient stores in
the notebook's metadata (what a frontend would show) holds the tasks' final values."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "live_widget.ipynb"
ENGINES, STEPS = 4, 40


def _models(nb) -> list[dict]:
    """The stored widget models: each with ``model_name``, ``state`` and ``buffers``."""
    stored = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json")
    assert stored, "nbclient stored no widget state"
    return list(stored["state"].values())


@pytest.mark.timeout(300)
def test_live_widget_notebook_ends_with_the_final_values_in_the_widget(tmp_path, monkeypatch):
    pytest.importorskip("ipywidgets")
    # The notebook starts its cluster in the default profile: a fresh IPython dir.
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for o in outputs)
    assert f"final step per engine: {[STEPS - 1] * ENGINES}" in text
    shown = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert shown, "no widget was displayed"

    models = _models(nb)
    tables = [m["state"]["value"] for m in models
              if m["model_name"] == "HTMLModel" and "corral-dataview" in m["state"].get("value", "")]
    assert len(tables) == 1, "one DataView table"
    rows = re.findall(r"<tr>(.*?)</tr>", tables[0])
    header = re.findall(r"<th>(.*?)</th>", rows[0])
    assert header[:5] == ["engine", "task", "engine up", "age", "updates"]
    body = [re.findall(r"<td>(.*?)</td>", r) for r in rows[1:]]
    assert [r[0] for r in body] == [str(i) for i in range(ENGINES)]
    assert {r[1] for r in body} == {"done"} and {r[2] for r in body} == {"yes"}
    column = dict(zip(header, zip(*body)))
    assert column["step"] == (str(STEPS - 1),) * ENGINES
    assert column["progress"] == (str(STEPS),) * ENGINES
    # Publications received: the engine may coalesce superseded ones (newest wins).
    assert all(1 <= int(n) <= STEPS for n in column["updates"])

    bars = [m["state"] for m in models if m["model_name"] == "FloatProgressModel"
            and "corral-dataview-progress" in m["state"].get("_dom_classes", [])]
    assert len(bars) == 1
    assert bars[0]["value"] == bars[0]["max"] == ENGINES * STEPS
    assert bars[0]["bar_style"] == "success"

    headers = [m["state"]["value"] for m in models if m["model_name"] == "HTMLModel"
               and m["state"].get("value", "").startswith("<b>simulation: ")]
    assert headers == [f"<b>simulation: finished ({ENGINES} done); "
                       f"{ENGINES * STEPS}/{ENGINES * STEPS} items done</b>"]

    pngs = [base64.b64decode(b["data"]) for m in models if m["model_name"] == "ImageModel"
            for b in m.get("buffers", []) if b["path"] == ["value"]]
    assert len(pngs) == 2, "a line plot (profile) and an image (field)"
    assert all(p.startswith(b"\x89PNG") for p in pngs)


@pytest.mark.timeout(300)
def test_display_data_as_a_cells_last_line_shows_the_widget_once(tmp_path, monkeypatch):
    """``ar.display_data()`` shows its view and returns it; IPython's showing of the
    returned value must not add a second copy of the widget."""
    pytest.importorskip("ipywidgets")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "import corral as ipp\ncluster = ipp.Cluster(n=1, cluster_id='')\n"
        "c = cluster.start_and_connect_sync()",
        "ar = c[:].apply_async(lambda: 1)\nar.display_data()",
        "view = _\nview.wait(timeout=60)",
        "view",  # a later cell shows it again
        "cluster.stop_cluster_sync()",
    )]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    def widgets_shown(cell):
        return [o for o in cell.outputs
                if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]

    assert not [o for c in nb.cells for o in c.outputs if o.get("output_type") == "error"]
    assert len(widgets_shown(nb.cells[1])) == 1
    assert len(widgets_shown(nb.cells[3])) == 1
    # Where widgets are not rendered, the text is the frame shown, not "VBox(...)".
    text = widgets_shown(nb.cells[3])[0]["data"]["text/plain"]
    assert text.startswith("<lambda>: finished (1 done); 1/1 tasks done\nengine"), text


def _iopub_bytes(msg) -> int:
    """What a message weighs on IOPub, as Jupyter's server counts it for its rate
    limit: its JSON parts and binary buffers."""
    import json

    parts = (msg["header"], msg["parent_header"], msg["metadata"], msg["content"])
    return (sum(len(json.dumps(p, default=str)) for p in parts)
            + sum(len(b) for b in msg.get("buffers") or []))


@pytest.mark.timeout(300)
def test_a_fast_publisher_with_big_noisy_images_stays_under_jupyters_iopub_rate_limit(tmp_path):
    """Tasks publish 256x256 noise as fast as they can; the kernel's IOPub traffic,
    measured over every 3 s window (Jupyter's ``rate_limit_window``), stays under the
    default ``iopub_data_rate_limit`` of 1 MB/s, even at max_fps=30."""
    import os
    import time

    from jupyter_client.manager import start_new_kernel

    pytest.importorskip("ipywidgets")
    code = """
import corral as ipp
cluster = ipp.Cluster(n=2, cluster_id="")
c = cluster.start_and_connect_sync()

def noisy(seconds):
    import time
    import numpy as np
    from corral.datapub import publish_data
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        publish_data({"noise": np.random.rand(256, 256), "trace": np.random.rand(4000)})
        time.sleep(0.001)

ar = c[:].apply_async(noisy, 6.0)
view = ar.display_data(max_fps=30)
assert view.wait(timeout=120)
cluster.stop_cluster_sync()
print("frames", view.frames)
"""
    env = dict(os.environ, IPYTHONDIR=str(tmp_path / "ipython"))
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
    try:
        msg_id = kc.execute(code)
        traffic, outputs = [], []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            msg = kc.get_iopub_msg(timeout=240)
            traffic.append((time.monotonic(), _iopub_bytes(msg)))
            if msg["msg_type"] in ("stream", "error"):
                outputs.append(msg["content"])
            if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"):
                break
    finally:
        kc.stop_channels()
        km.shutdown_kernel()  # politely: the kernel's atexit stops a cluster left running
    assert not [o for o in outputs if "ename" in o], outputs
    frames = int(re.search(r"frames (\d+)", "".join(o.get("text", "") for o in outputs)).group(1))
    assert frames >= 3, "the view hardly drew"
    window = 3.0
    worst = max(sum(n for t, n in traffic if t0 <= t < t0 + window) for t0, _ in traffic)
    assert worst / window < 1_000_000, f"{worst / window:.0f} B/s over a {window} s window"
    assert sum(n for _, n in traffic) > 200_000, "too little traffic to mean anything"
