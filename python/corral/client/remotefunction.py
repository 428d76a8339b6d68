"""What ``@view.remote()`` and ``@view.parallel()`` return: callables that run the wrapped
function through a view, so remote code reads like a local call (ipyparallel's
``RemoteFunction`` and ``ParallelFunction``)."""

from __future__ import annotations

import functools

__all__ = ["ParallelFunction", "RemoteFunction"]


class RemoteFunction:
    """``rf(*args)`` is ``view.apply(f, *args)``, blocking as ``block`` says (the view's
    own ``block`` when None)."""

    def __init__(self, view, f, block=None, **flags):
        if flags:
            raise TypeError(f"unsupported flags: {sorted(flags)}")
        self.view = view
        self.func = f
        self.block = block
        functools.update_wrapper(self, f, updated=())
        # help() says what the name now stands for, then the function's own doc.
        self.__doc__ = f"{type(self).__name__} wrapping {getattr(f, '__name__', f)!s}:\n\n" \
            f"{getattr(f, '__doc__', None) or ''}"

    def _blocking(self) -> bool:
        return self.view.block if self.block is None else self.block

    def __call__(self, *args, **kwargs):
        return self.view._apply(self.func, args, kwargs, self._blocking())


class ParallelFunction(RemoteFunction):
    """``pf(*seqs)`` calls ``f`` once per chunk of the sequences (one chunk per engine of
    a DirectView, per ``chunksize`` elements of a LoadBalancedView) and joins the chunk
    results; ``pf.map(*seqs)`` calls ``f`` once per element instead."""

    def __init__(self, view, f, block=None, chunksize=None, ordered=True, dist="b", **flags):
        super().__init__(view, f, block=block, **flags)
        self.chunksize = chunksize
        self.ordered = ordered
        self.dist = dist

    def __call__(self, *sequences):
        from corral.client.map import map_on_view

        return map_on_view(self.view, self.func, sequences, self._blocking(),
                           chunksize=self.chunksize, ordered=self.ordered, whole_chunks=True,
                           dist=self.dist)

    def map(self, *sequences):
        from corral.client.map import map_on_view

        return map_on_view(self.view, self.func, sequences, self._blocking(),
                           chunksize=self.chunksize, ordered=self.ordered, dist=self.dist)
