"""pytest plugin (`-p corral_ipp_plugin`, see run.sh): puts corral's parts into the cluster
ipyparallel's own test suite starts, and optionally makes the suite's client corral's.

- IPP_SUITE_CONTROLLER=corral: every controller is corral's, through ipcontroller_shim.py.
- IPP_SUITE_ENGINES=corral: every engine is corral's, through ipengine_shim.py.
- IPP_SUITE_CLIENT=corral: the client is corral's (see `use_corral_client`).

Two places start each: the suite's module-level `setup()`/`add_engines()`
(ipyparallel/tests/__init__.py, which reads the names `ipcontroller_cmd_argv` and
`ipengine_cmd_argv` from its own module) and `ipp.Cluster`'s launchers (the traits
`controller_cmd` and `engine_cmd`).
"""

from __future__ import annotations

import os
import sys
import types

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



def pytest_collection_modifyitems(session, config, items):
    if os.environ.get("IPP_SUITE_CLIENT") != "corral":
        return
    import ipyparallel.tests.clienttest as clienttest

    # Every test module imported so far: tests inherited from another module (the broadcast
    # view's from test_view) read that module's names.
    modules = {clienttest, *(item.module for item in items if getattr(item, "module", None))}
    modules |= {m for name, m in sys.modules.items() if name.startswith("ipyparallel.tests.")}
    for module in modules:
        # test_cluster's clients come from the stock `Cluster` (which IPP_SUITE_CONTROLLER
        # and IPP_SUITE_ENGINES point at corral's processes): they stay stock, with stock errors.
        if module.__name__ != "ipyparallel.tests.test_cluster":
            use_corral_client(module)
        else:
            _keep_stock_raises_remote(module, clienttest)


def _keep_stock_raises_remote(module: types.ModuleType, clienttest) -> None:
    """`module`'s `raises_remote` (from clienttest, whose names now are corral's) checks
    the stock errors that its stock clients raise."""
    import contextlib

    import ipyparallel.error as stock_error

    inner = clienttest.raises_remote.__wrapped__
    stock_globals = {**vars(clienttest), "error": stock_error}
    module.raises_remote = contextlib.contextmanager(
        types.FunctionType(inner.__code__, stock_globals, inner.__name__))


#: Names the suite reaches through `ipyparallel` that belong to the client side. `Cluster`
#: stays stock: it starts the processes, which IPP_SUITE_CONTROLLER/ENGINES choose.
CLIENT_NAMES = (
    "Client", "DirectView", "LoadBalancedView", "BroadcastView", "AsyncResult",
    "AsyncMapResult", "AsyncHubResult", "Reference", "Dependency", "interactive", "require",
    "depend", "dependent", "parallel", "remote", "ViewExecutor", "register_joblib_backend",
)


class _Redirected(types.ModuleType):
    """A stand-in for a module: `overrides` first, then the real module's attributes."""

    def __init__(self, real: types.ModuleType, overrides: dict):
        super().__init__(real.__name__, real.__doc__)
        self.__dict__.update(overrides)
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)


def use_corral_client(module: types.ModuleType) -> None:
    """IPP_SUITE_CLIENT=corral: in one test module, `ipyparallel.Client` (and the views,
    results, decorators and error classes) mean corral's, as after `import corral as ipp`
    in a user's code. Only the test modules' own names change: ipyparallel's internals in
    this process (its `Cluster`, the suite's engine start-up) keep the stock classes.
    """
    import ipyparallel
    import ipyparallel.error as stock_error
    import ipyparallel.util as stock_util

    import corral
    import corral.error as corral_error

    client_side = {name: getattr(corral, name) for name in CLIENT_NAMES}
    errors = {n: getattr(corral_error, n) for n in dir(stock_error)
              if isinstance(getattr(stock_error, n), type) and hasattr(corral_error, n)}
    corral_of = {id(getattr(ipyparallel, n)): v for n, v in client_side.items()}
    corral_of.update({id(getattr(stock_error, n)): v for n, v in errors.items()})
    corral_of[id(stock_util.interactive)] = corral.interactive
    redirected = {
        id(ipyparallel): _Redirected(ipyparallel, {**client_side, **errors, "error": None}),
        id(stock_error): _Redirected(stock_error, errors),
        id(stock_util): _Redirected(stock_util, {"interactive": corral.interactive}),
    }
    redirected[id(ipyparallel)].error = redirected[id(stock_error)]
    for name, value in list(vars(module).items()):
        replacement = redirected.get(id(value)) or corral_of.get(id(value))
        if replacement is not None:
            setattr(module, name, replacement)
