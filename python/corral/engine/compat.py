"""ipyparallel's own helpers, when code on a corral engine imports them, work with corral's
parts. An import hook patches a module when (and only if) something imports it, so engines
do not pay for importing ipyparallel up front:

- `ipyparallel.datapub.publish_data` publishes through corral (ipyparallel's looks up an
  ipykernel shell a corral engine does not have);
- `ipyparallel.serialize.uncan` also uncans corral's stand-ins for ipyparallel's canned
  objects (`corral.serialize.canning`): a stock client's `@require(f)` runs ipyparallel's
  `_require` on the engine, which uncans `f` itself;
- `ipyparallel.util.become_dask_worker` and `stop_distributed_worker`, which a stock
  client's `become_dask()` / `stop_dask()` send, are corral's (`engine.dask_worker`):
  ipyparallel's need an ipykernel kernel and its running event loop.
"""

from __future__ import annotations

import importlib.abc
import sys

DATAPUB = ("ipyparallel.engine.datapub", "ipyparallel.datapub")
CANNING = ("ipyparallel.serialize.canning", "ipyparallel.serialize")
UTIL = ("ipyparallel.util",)
TARGETS = DATAPUB + CANNING + UTIL


def _patch(module) -> None:
    if module.__name__ in DATAPUB:
        from corral.datapub import publish_data

        module.publish_data = publish_data
    elif module.__name__ in UTIL:
        from corral.engine import dask_worker

        # Stock clients send these canned (as code, not by name): `corral_replaces_stock`
        # tells corral's uncanning to run the module's attribute instead.
        module.become_dask_worker = dask_worker.start_worker
        module.stop_distributed_worker = dask_worker.stop_worker
    elif getattr(module, "uncan", None) is not None:
        module.uncan = _uncan_also_corral(module.uncan)


def _uncan_also_corral(stock_uncan):
    if getattr(stock_uncan, "corral_aware", False):
        return stock_uncan
    from corral.serialize import canning

    def uncan(obj, g=None):
        if canning.contains_canned(obj):
            return canning.uncan(obj, g)
        return stock_uncan(obj, g)

    uncan.corral_aware = True
    uncan.__doc__ = stock_uncan.__doc__
    return uncan


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def install() -> None:
    for name in TARGETS:
        if name in sys.modules:
            _patch(sys.modules[name])
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
