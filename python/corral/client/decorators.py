"""Top-level ``corral.remote(view)`` and ``corral.parallel(view)`` decorators, as
ipyparallel's: the same as ``@view.remote()`` and ``@view.parallel()``."""

from __future__ import annotations

__all__ = ["parallel", "remote"]


def remote(view, block=None, **flags):
    """``@remote(view)``: calling the function runs it through ``view`` (``apply``)."""
    return view.remote(block=block, **flags)


def parallel(view, dist="b", block=None, **flags):
    """``@parallel(view)``: calling the function runs it on chunks of its sequence
    arguments across ``view``; ``.map`` maps it element-wise."""
    return view.parallel(dist=dist, block=block, **flags)
