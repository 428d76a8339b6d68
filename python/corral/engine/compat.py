"""`from ipyparallel.datapub import publish_data` inside a corral engine publishes through
corral. ipyparallel's version looks up an ipykernel shell that a corral engine does not
have; an import hook swaps the function when (and only if) user code imports it, so
engines do not pay for importing ipyparallel up front.
"""

from __future__ import annotations

import importlib.abc
import sys

TARGETS = ("ipyparallel.engine.datapub", "ipyparallel.datapub")


def _patch(module) -> None:
    from corral.datapub import publish_data

    module.publish_data = publish_data


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
