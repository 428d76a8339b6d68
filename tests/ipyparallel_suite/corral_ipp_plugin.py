"""pytest plugin (`-p corral_ipp_plugin`, see run.sh): when IPP_SUITE_CONTROLLER=corral,
every controller ipyparallel's test suite starts is corral's, through ipcontroller_shim.py.

Two places start controllers: the suite's module-level `setup()` (ipyparallel/tests/__init__.py,
which reads the name `ipcontroller_cmd_argv` from its own module) and `ipp.Cluster`'s launchers
(trait `ControllerLauncher.controller_cmd`). Engines and the client stay stock.
"""

from __future__ import annotations

import os
import sys

SHIM = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ipcontroller_shim.py")]


def pytest_configure(config):
    if os.environ.get("IPP_SUITE_CONTROLLER") != "corral":
        return
    import ipyparallel.tests as suite
    from ipyparallel.cluster import launcher

    suite.ipcontroller_cmd_argv = list(SHIM)
    launcher.ControllerLauncher.class_traits()["controller_cmd"].default_value = list(SHIM)
    launcher.LocalControllerLauncher.class_traits()["controller_cmd"].default_value = list(SHIM)
