"""examples/data_publication.ipynb runs headlessly and its plot cell draws an image."""

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
