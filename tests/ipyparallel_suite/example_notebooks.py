"""Run ipyparallel's own example notebooks against corral: `import ipyparallel as ipp`
becomes `import corral as ipp`, every cell runs headlessly (errors recorded, not fatal), and
each notebook's raising cells are listed. A drop-in check with real users' code, not part of
`make test` (the notebooks live in ipyparallel's repository, not in its wheel):

    .venv/bin/python tests/ipyparallel_suite/example_notebooks.py \\
        <ipyparallel checkout>/docs/source/examples "Futures.ipynb" "joblib.ipynb" ...

A name followed by `:cluster` (e.g. "Data Publication API.ipynb:cluster") first starts a
4-engine corral cluster in the default profile, for notebooks that expect one running
(`ipp.Client()`). Each run uses its own IPYTHONDIR; executed copies go to a temporary folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CORRAL = str(Path(sys.executable).with_name("corral"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(examples: Path, name: str, needs_cluster: bool) -> list[tuple]:
    nb = nbformat.read(examples / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = cell.source.replace("import ipyparallel as ipp", "import corral as ipp")
    home = Path(tempfile.mkdtemp(prefix="corral-examples-"))
    env = dict(os.environ, IPYTHONDIR=str(home / "ipython"))
    os.environ["IPYTHONDIR"] = env["IPYTHONDIR"]  # the notebook's kernel inherits it
    if needs_cluster:
        subprocess.run([CORRAL, "cluster", "start", "-n", "4", "--daemonize"], env=env,
                       check=True, timeout=120)
    started = time.monotonic()
    try:
        NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(home)}}).execute()
    finally:
        if needs_cluster:
            subprocess.run([CORRAL, "cluster", "stop"], env=env, timeout=120)
    nbformat.write(nb, home / name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    raised = [(i, o["ename"], ANSI.sub("", o.get("evalue", ""))[:160],
               c.source.splitlines()[0][:70] if c.source else "")
              for i, c in enumerate(code) for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    print(f"{name}: {len(code)} code cells, {len(raised)} raised, "
          f"{time.monotonic() - started:.0f} s (executed copy: {home / name})")
    for i, ename, evalue, first in raised:
        print(f"   cell {i}: {ename}: {evalue} | {first}")
    return raised


def main(argv: list[str]) -> None:
    examples = Path(argv[0])
    for arg in argv[1:]:
        name, _, flag = arg.partition(":")
        run(examples, name, flag == "cluster")


if __name__ == "__main__":
    main(sys.argv[1:])
