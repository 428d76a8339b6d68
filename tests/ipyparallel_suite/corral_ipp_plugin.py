"""pytest plugin (`-p corral_ipp_plugin`, see run.sh): puts corral's parts into the cluster
ipyparallel's own test suite starts, while the client (the suite itself) stays stock.

- IPP_SUITE_CONTROLLER=corral: every controller is corral's, through ipcontroller_shim.py.
- IPP_SUITE_ENGINES=corral: every engine is corral's, through ipengine_shim.py.

Two places start each: the suite's module-level `setup()`/`add_engines()`
(ipyparallel/tests/__init__.py, which reads the names `ipcontroller_cmd_argv` and
`ipengine_cmd_argv` from its own module) and `ipp.Cluster`'s launchers (the traits
`controller_cmd` and `engine_cmd`).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CONTROLLER_SHIM = [sys.executable, os.path.join(HERE, "ipcontroller_shim.py")]
ENGINE_SHIM = [sys.executable, os.path.join(HERE, "ipengine_shim.py")]


def pytest_configure(config):
    import ipyparallel.tests as suite
    from ipyparallel.cluster import launcher

    if os.environ.get("IPP_SUITE_CONTROLLER") == "corral":
        suite.ipcontroller_cmd_argv = list(CONTROLLER_SHIM)
        for cls in (launcher.ControllerLauncher, launcher.LocalControllerLauncher):
            cls.class_traits()["controller_cmd"].default_value = list(CONTROLLER_SHIM)
    if os.environ.get("IPP_SUITE_ENGINES") == "corral":
        suite.ipengine_cmd_argv = list(ENGINE_SHIM)
        for cls in (launcher.EngineLauncher, launcher.LocalEngineLauncher):
            cls.class_traits()["engine_cmd"].default_value = list(ENGINE_SHIM)
