"""CurveZMQ across implementations, with real processes on 127.0.0.1:

- a stock ipyparallel 9.2 client and stock `ipengine`s on corral's controller run with
  `--enable-curve`;
- corral's client and engines on stock ipyparallel's controller run with
  `--IPController.enable_curve=True` (which, as ipyparallel does, turns message signing off
  and relies on CURVE alone: its connection files carry an empty key).

Functions are `@ipp.interactive` (module `__main__`), so engines need not import this module.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import corral

ipp = pytest.importorskip("ipyparallel")

from cluster_processes import (  # noqa: E402
    Processes,
    corral_engine_argv,
    stock_engine_argv,
    wait_for,
)

N_ENGINES = 2


@ipp.interactive
def publish_loop():
    import time

    from ipyparallel.datapub import publish_data

    for i in range(5):
        publish_data(dict(i=i))
        time.sleep(0.05)
    return "done"


@ipp.interactive
def double(x):
    return 2 * x


def _start_controller(procs: Processes, profile_dir: Path, argv: list[str]) -> dict:
    """Starts a controller and returns its client connection file, once both files exist."""
    procs.start("controller", argv)
    security = profile_dir / "security"
    wait_for(
        lambda: (security / "ipcontroller-client.json").exists()
        and (security / "ipcontroller-engine.json").exists(),
        30, "connection files",
    )
    return json.loads((security / "ipcontroller-client.json").read_text())


def _publication_flow(c) -> None:
    assert sorted(c.ids) == list(range(N_ENGINES))
    dv = c[:]
    ar = dv.apply_async(publish_loop)
    assert ar.get(timeout=30) == ["done"] * N_ENGINES
    wait_for(lambda: all(d.get("i") == 4 for d in ar.data), 10, f"last publication, have {ar.data}")
    assert c.load_balanced_view().apply_sync(double, 21) == 42
    assert c.broadcast_view().apply_sync(double, 5) == [10] * N_ENGINES


def test_stock_client_and_engines_on_corral_curve_controller(tmp_path, procs):
    profile_dir = tmp_path / "profile"
    info = _start_controller(
        procs, profile_dir,
        [sys.executable, "-m", "corral", "controller", "--profile-dir", str(profile_dir),
         "--ip", "127.0.0.1", "--log-level", "info", "--enable-curve"],
    )
    assert len(info["curve_serverkey"]) == 40
    for i in range(N_ENGINES):
        procs.start(f"engine{i}", stock_engine_argv(profile_dir))
    c = ipp.Client(profile_dir=str(profile_dir), timeout=30)
    try:
        assert c.curve_serverkey == info["curve_serverkey"].encode()
        c.wait_for_engines(N_ENGINES, timeout=60)
        _publication_flow(c)
    finally:
        c.close()
    for i in range(N_ENGINES):
        assert "Using CurveZMQ security" in procs.log(f"engine{i}")


def test_corral_client_and_engines_on_stock_curve_controller(tmp_path, procs):
    profile_dir = tmp_path / "profile"
    info = _start_controller(
        procs, profile_dir,
        [sys.executable, "-m", "ipyparallel.controller", "--profile-dir", str(profile_dir),
         "--ip", "127.0.0.1", "--log-level", "20", "--IPController.enable_curve=True"],
    )
    assert info["curve_serverkey"] and info["key"] == ""
    for i in range(N_ENGINES):
        procs.start(f"engine{i}", corral_engine_argv(profile_dir))
    c = corral.Client(profile_dir=profile_dir, timeout=30)
    try:
        c.wait_for_engines(N_ENGINES, timeout=60)
        _publication_flow(c)
    finally:
        c.close()
    for i in range(N_ENGINES):
        assert "using CurveZMQ encryption" in procs.log(f"engine{i}")


def test_a_stock_engine_without_the_key_is_not_registered(tmp_path, procs):
    """A plain engine (its file stripped of curve_serverkey) gets nowhere; the CURVE
    controller stays up and serves a proper client."""
    profile_dir = tmp_path / "profile"
    _start_controller(
        procs, profile_dir,
        [sys.executable, "-m", "corral", "controller", "--profile-dir", str(profile_dir),
         "--ip", "127.0.0.1", "--log-level", "info", "--enable-curve"],
    )
    engine_file = profile_dir / "security" / "ipcontroller-engine.json"
    plain = json.loads(engine_file.read_text())
    plain["curve_serverkey"] = None
    plain_file = tmp_path / "plain-engine.json"
    plain_file.write_text(json.dumps(plain))
    procs.start(
        "plain-engine",
        [sys.executable, "-m", "ipyparallel.engine", f"--file={plain_file}", "--timeout=3",
         "--log-level=DEBUG"],
    )
    c = corral.Client(profile_dir=profile_dir, timeout=30)
    try:
        wait_for(lambda: "Registration timed out" in procs.log("plain-engine"), 60,
                 "the plain engine to give up registering")
        assert c.ids == []
        assert procs.procs["controller"].poll() is None
    finally:
        c.close()
