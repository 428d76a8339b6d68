"""examples/mpi_simulation.ipynb runs headlessly on MPI engines: rank 0's publications are
watched live, the final one is in ar.data at get(), and the plot cell draws an image."""

import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "mpi_simulation.ipynb"


@pytest.mark.timeout(300)
def test_mpi_simulation_notebook_runs_and_plots(tmp_path, monkeypatch):
    if shutil.which("mpiexec") is None:
        pytest.fail("mpiexec is not on PATH: run `make install` (it installs openmpi-bin)")
    # The notebook uses the default profile: point it at a fresh IPython dir.
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert re.search(r"engine id -> MPI rank: \{0: \d, 1: \d, 2: \d, 3: \d\}", text), text
    assert "final step 39; total heat on every rank: [1100.0]" in text, text
    seen = int(re.search(r"steps seen live: (\d+) of 40", text).group(1))
    assert seen >= 5, f"only {seen} steps were seen while the simulation ran"
    assert [o for o in outputs if "image/png" in o.get("data", {})], "the plot cell drew no image"
