"""ipyparallel's own `Cluster` launching corral's controller (and stock engines): its
launchers pass the profile directory and cluster id in `IPP_PROFILE_DIR`/`IPP_CLUSTER_ID`,
not as options, so the controller must read them as ipcontroller does."""

from __future__ import annotations

import sys

import pytest

ipp = pytest.importorskip("ipyparallel")


@ipp.interactive
def _double(x):
    return 2 * x


def test_stock_cluster_with_corral_controller(tmp_path):
    from traitlets.config import Config

    config = Config()
    config.LocalControllerLauncher.controller_cmd = [sys.executable, "-m", "corral", "controller"]
    cluster = ipp.Cluster(
        n=2, profile_dir=str(tmp_path / "profile"), cluster_id="compat",
        controller_ip="127.0.0.1", config=config, load_profile=False,
    )
    try:
        client = cluster.start_and_connect_sync()
        try:
            client.wait_for_engines(2, timeout=60)
            assert client[:].apply_sync(_double, 21) == [42, 42]
            assert (tmp_path / "profile" / "security" / "ipcontroller-compat-client.json").exists()
        finally:
            client.close()
    finally:
        cluster.stop_cluster_sync()
