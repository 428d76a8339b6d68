"""``with view.sync_imports(): import numpy`` — each import written in the block runs here
and on the view's engines, binding the same names in their namespace (ipyparallel's
``DirectView.sync_imports``). ``import a as b`` binds ``a`` on the engines, as there."""

from __future__ import annotations

import builtins
import sys
from contextlib import contextmanager

__all__ = ["import_on_engine", "sync_imports"]


def import_on_engine(name: str, fromlist, level: int) -> None:
    """Runs ON an engine: the import, bound in the user namespace (``__main__``) as the
    ``import`` statement would bind it."""
    ns = sys.modules["__main__"].__dict__
    module = __import__(name, ns, ns, fromlist or (), level)
    if fromlist:
        for attr in fromlist:
            ns[attr] = getattr(module, attr)
    else:
        top = name.partition(".")[0]
        ns[top] = module  # `import a.b` binds `a`, which __import__ returns


@contextmanager
def sync_imports(view, local=True, quiet=False):
    """The context manager behind ``view.sync_imports()``; raises at exit if an import
    failed on an engine."""
    if not local:
        raise NotImplementedError(
            "sync_imports(local=False) is not supported: the import runs here too")
    block_frame = sys._getframe(2)  # this generator <- __enter__ <- the `with` block
    real_import = builtins.__import__
    results = []

    def forwarding_import(name, globals=None, locals=None, fromlist=(), level=0):
        module = real_import(name, globals, locals, fromlist, level)
        if sys._getframe(1) is block_frame:  # not the imports those modules make
            if not quiet:
                what = f"{', '.join(fromlist)} from {name}" if fromlist else name
                print(f"importing {what} on engine(s)")
            results.append(view._apply(import_on_engine, (name, list(fromlist or ()), level),
                                       {}, False))
        return module

    builtins.__import__ = forwarding_import
    try:
        yield
    finally:
        builtins.__import__ = real_import
    for ar in results:
        ar.get()
