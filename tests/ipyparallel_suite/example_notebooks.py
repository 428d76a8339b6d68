"""Run ipyparallel's own example notebooks against corral: `import ipyparallel as ipp`
becomes `import corral as ipp`, every cell runs headlessly (errors recorded, not fatal), and
each notebook's raising cells are listed. A drop-in check with real users' code, not part of
`make test` (the notebooks live in ipyparallel's repository, not in its wheel):

    .venv/bin/python tests/ipyparallel_suite/example_notebooks.py \\
        <ipyparallel checkout>/docs/source/examples "Futures.ipynb" "joblib.ipynb" ...

A name followed by `:cluster` (e.g. "Data Publication API.ipynb:cluster") first starts a
4-engine corral cluster in the default profile, for notebooks that expect one running
(`ipp.Client()`); `:cluster:n=16:profile=mpi:engines=mpi` sets its size, profile and engine
launcher (what `ipcluster start` was given where the notebook was written). Each run uses its own IPYTHONDIR and runs in a copy of the examples folder
(so files beside a notebook are found); executed copies are written there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CORRAL = str(Path(sys.executable).with_name("corral"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(examples: Path, name: str, cluster: dict | None) -> list[tuple]:
    nb = nbformat.read(examples / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = cell.source.replace("import ipyparallel as ipp", "import corral as ipp")
    home = Path(tempfile.mkdtemp(prefix="corral-examples-"))
    # A copy of the examples folder, so a notebook finds the files next to it (as when a
    # user opens it there) and may write beside them.
    folder = home / "examples"
    shutil.copytree(examples, folder)
    env = dict(os.environ, IPYTHONDIR=str(home / "ipython"))
    os.environ["IPYTHONDIR"] = env["IPYTHONDIR"]  # the notebook's kernel inherits it
    if cluster is not None:
        profile = ["--profile", cluster.get("profile", "default")]
        # Started in the notebook's folder, as a user would, so engines import the modules
        # beside it.
        subprocess.run([CORRAL, "cluster", "start", "-n", cluster.get("n", "4"), "--daemonize",
                        "--engines", cluster.get("engines", "local"), *profile], env=env,
                       cwd=(folder / name).parent, check=True, timeout=300)
    started = time.monotonic()
    try:
        NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str((folder / name).parent)}}).execute()
    finally:
        if cluster is not None:
            subprocess.run([CORRAL, "cluster", "stop", *profile], env=env, timeout=120)
    nbformat.write(nb, folder / name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    raised = [(i, o["ename"], ANSI.sub("", o.get("evalue", ""))[:160],
               c.source.splitlines()[0][:70] if c.source else "")
              for i, c in enumerate(code) for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    print(f"{name}: {len(code)} code cells, {len(raised)} raised, "
          f"{time.monotonic() - started:.0f} s (executed copy: {folder / name})")
    for i, ename, evalue, first in raised:
        print(f"   cell {i}: {ename}: {evalue} | {first}")
    return raised


def main(argv: list[str]) -> None:
    examples = Path(argv[0])
    for arg in argv[1:]:
        name, *flags = arg.split(":")
        cluster = None
        if flags and flags[0] == "cluster":
            cluster = dict(f.split("=", 1) for f in flags[1:])
        run(examples, name, cluster)


if __name__ == "__main__":
    main(sys.argv[1:])
