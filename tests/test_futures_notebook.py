"""examples/futures_and_joblib.ipynb runs headlessly: futures, await, executor, lazy imap
and joblib on a corral cluster, as a notebook user would run them."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "futures_and_joblib.ipynb"


@pytest.mark.timeout(300)
def test_futures_notebook_runs(tmp_path, monkeypatch):
    pytest.importorskip("joblib")
    # The notebook uses the default profile: point it at a fresh IPython dir.
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "finished: 20 sum: 2470" in text
    assert "callback saw [49]" in text
    assert "awaited 9 [0, 1, 4, 9]" in text
    assert "executor map: [0, 1, 4, 9, 16, 25, 36, 49]" in text
    assert "first squares: [0, 1, 4, 9, 16, 25]" in text
    assert "joblib squares: [" in text and "ran on the engines: True" in text
