"""``python/corral/_core.pyi`` matches the built native module (``mypy.stubtest``)."""

import subprocess
import sys

import pytest

pytest.importorskip("mypy", reason="mypy (requirements-dev.txt) checks the stub")


def test_core_stub_matches_extension():
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "corral._core"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
