"""Fixtures shared by the cluster tests that need a real single-node Slurm."""

from __future__ import annotations

import os
import shutil

import pytest

from slurm import start_single_node_slurm


@pytest.fixture(scope="module")
def slurm():
    """One Slurm for the module; every Slurm command (the launcher's too) finds it through
    SLURM_CONF, set for the module and restored after."""
    cluster = start_single_node_slurm()
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
