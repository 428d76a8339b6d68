"""``LoadBalancedView.imap``: a lazy parallel map over iterators, infinite ones included.

Unlike ``map``, which lists its inputs and submits everything at once, this reads the
inputs as results are consumed, keeping at most ``max_outstanding`` tasks submitted and
not yet yielded: a result taken makes room for the next input, submitted before the
result is handed over so the engines keep working while the caller does. No thread: the
iterator does the reading, submitting and waiting.
"""

from __future__ import annotations

import concurrent.futures
from collections import deque

__all__ = ["LazyMapIterator", "lazy_imap"]


def lazy_imap(view, f, sequences, ordered=True, max_outstanding="auto",
              return_exceptions=False):
    """A generator of ``f(*args)`` for ``args`` in ``zip(*sequences)`` (see the module
    doc); ``max_outstanding``: an int (0: no limit) or ``"auto"``, one task per engine."""
    if not sequences:
        raise TypeError("imap() needs at least one sequence")
    if max_outstanding == "auto":
        from corral.client.executor import engine_count

        max_outstanding = max(engine_count(view), 1)
    if isinstance(max_outstanding, bool) or not isinstance(max_outstanding, int) \
            or max_outstanding < 0:
        raise ValueError(f"max_outstanding must be 'auto' or an int >= 0, not {max_outstanding!r}")
    return LazyMapIterator(view, f, zip(*sequences), ordered, max_outstanding,
                           return_exceptions)


class LazyMapIterator:
    """The results of ``imap``, as they come; ``cancel()`` stops reading the inputs (the
    tasks already submitted still run), as ipyparallel's iterator of that name."""

    def __init__(self, view, f, inputs, ordered, limit, return_exceptions):
        self._cancelled = False
        self._results = _generate(view, f, inputs, ordered, limit, return_exceptions,
                                  lambda: self._cancelled)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._results)

    def cancel(self) -> None:
        self._cancelled = True

    def close(self) -> None:
        """Stop iterating (a generator's ``close``): nothing more is read or submitted."""
        self._cancelled = True
        self._results.close()


def _generate(view, f, inputs, ordered, limit, return_exceptions, cancelled):
    pending = deque()  # ordered: in submission order; else the order does not matter

    def refill():
        while (not limit or len(pending) < limit) and not cancelled():
            args = next(inputs, None)
            if args is None:
                return
            pending.append(view.apply_async(f, *args))

    def value(ar):
        return ar.get(return_exceptions=return_exceptions)

    refill()
    while pending:
        if ordered:
            ar = pending.popleft()
            ar.wait()
            refill()
            yield value(ar)
            continue
        done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
        for ar in [p for p in pending if p in done]:
            pending.remove(ar)
        refill()
        for ar in done:
            yield value(ar)
