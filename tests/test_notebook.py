"""examples/data_publication.ipynb runs headlessly and its plot cell draws an image."""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "data_publication.ipynb"


@pytest.mark.timeout(300)
def test_data_publication_notebook_runs_and_plots(tmp_path, monkeypatch):
    # The notebook uses the default profile: point it at a fresh IPython dir.
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, "the plot cell produced no image"
    text = "".join(o.get("text", "") for o in outputs)
    assert "final time step per engine: [9, 9, 9, 9]" in text


MAGICS_NOTEBOOK = NOTEBOOK.parent / "parallel_magics.ipynb"


def _run_magics_notebook(tmp_path, monkeypatch, engine_argv):
    """Runs examples/parallel_magics.ipynb on a 2-engine cluster that this test starts in
    the default profile of a fresh IPython dir (the notebook's `ipp.Client()` finds it);
    returns the code cells' outputs, one list per cell."""
    from cluster_processes import Processes, start_corral_controller

    ipython_dir = tmp_path / "ipython"
    profile_dir = ipython_dir / "profile_default"
    profile_dir.mkdir(parents=True)
    monkeypatch.setenv("IPYTHONDIR", str(ipython_dir))
    procs = Processes(tmp_path)
    try:
        start_corral_controller(procs, profile_dir)
        for i in range(2):
            procs.start(f"engine{i}", engine_argv(profile_dir))
        nb = nbformat.read(MAGICS_NOTEBOOK, as_version=4)
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    except Exception:
        print(procs.report())
        raise
    finally:
        procs.stop_all()
    return [cell.get("outputs", []) for cell in nb.cells if cell.cell_type == "code"]


def _check_magics_outputs(cells):
    outputs = [o for cell in cells for o in cell]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert [e["ename"] for e in errors] == ["AlreadyDisplayedError"], "only the cell tagged raises-exception fails"
    text = "".join(o.get("text", "") for o in outputs)
    assert "ZeroDivisionError" in text, "the engine's traceback was streamed"
    assert "[stdout:0]" in text and "[stdout:1]" in text and "engine process" in text
    # Out[e:n] prompts are red in a notebook, as in ipyparallel: drop the color codes.
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", o.get("data", {}).get("text/plain", ""))
             for o in outputs]
    assert any("Out[0:" in p and ": 120" in p for p in plain), plain
    assert any("Out[1:" in p and ": 720" in p for p in plain), plain
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert sorted(o["metadata"]["engine"] for o in images) == [0, 1], "a figure from each engine"
    assert "total on this engine: 45" in text and "total on this engine: 190" in text
    assert any("[45, 190]" in p for p in plain), "%autopx ran the cell on the engines"


@pytest.mark.timeout(300)
def test_parallel_magics_notebook_with_stock_engines_shows_their_figures(tmp_path, monkeypatch):
    """corral's client and controller with stock ipengines (IPython kernels)."""
    pytest.importorskip("ipyparallel")
    from cluster_processes import stock_engine_argv

    _check_magics_outputs(_run_magics_notebook(tmp_path, monkeypatch, stock_engine_argv))


@pytest.mark.timeout(300)
def test_parallel_magics_notebook_with_corral_engines(tmp_path, monkeypatch):
    from cluster_processes import corral_engine_argv

    _check_magics_outputs(_run_magics_notebook(tmp_path, monkeypatch, corral_engine_argv))
