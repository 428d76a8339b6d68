"""``AsyncResult``: the handle on submitted tasks, with ipyparallel's semantics.

A task counts as done only once its reply AND its engine's ``status: idle`` have arrived
(the Rust store enforces this), so when ``get()`` returns, ``data``, ``stdout`` and
``stderr`` are final. ``data`` can be read at any time while tasks run: each read merges
only the (conflated) updates published since the previous read.
"""

from __future__ import annotations

import concurrent.futures

import time
from concurrent.futures import CancelledError, Future
from datetime import datetime

from corral import error
from corral.client.futures import WatchingWaiters, watcher_of

__all__ = ["AsyncResult", "CoalescedResult", "msg_ids_of"]


def msg_ids_of(jobs, history=None) -> list[str]:
    """The msg_ids that ``jobs`` names: a msg_id, an ``AsyncResult``, an int (an index into
    ``history``, where one is given), or an iterable of these."""
    if isinstance(jobs, (str, int, AsyncResult)):
        jobs = [jobs]
    msg_ids: list[str] = []
    for job in jobs:
        if isinstance(job, str):
            msg_ids.append(job)
        elif isinstance(job, AsyncResult):
            msg_ids.extend(job.msg_ids)
        elif isinstance(job, int) and not isinstance(job, bool) and history is not None:
            msg_ids.append(history[job])
        else:
            kinds = "a msg_id, an AsyncResult" + (" or an int" if history is not None else "")
            raise TypeError(f"expected {kinds}, not {job!r}")
    return msg_ids


class AsyncResult(Future):
    """Results of one call: one msg_id per engine (DirectView) or one task.

    A ``concurrent.futures.Future`` (as in ipyparallel): ``add_done_callback``,
    ``concurrent.futures.wait``/``as_completed``, ``await ar`` and
    ``asyncio.wrap_future(ar)`` work; see ``futures.py`` for how completion is signalled.
    """

    def __init__(self, client, msg_ids, single=False, fname="unknown", targets=None,
                 return_exceptions=False, owner=False):
        super().__init__()
        self._waiters = WatchingWaiters(self)
        self._return_exceptions = return_exceptions
        self._client = client
        self.msg_ids = list(msg_ids)
        self._single_result = single
        self._fname = fname
        self._targets = targets
        self._t0 = time.monotonic()
        self._t_done = None
        self._resolved = False  # the results are in
        self._settled = False  # the Future is finished (results, or ControllerLost)
        #: ``owner`` (ipyparallel's; a view's results own theirs): once done, this
        #: result is the one place its tasks' results and metadata are found, no longer
        #: ``Client.results``/``metadata``. Results of other clients' tasks fetched from
        #: the controller move into it; the client's own stay in its store (freed by a
        #: purge, as every result), unlisted.
        self._owner = owner
        self._kept: dict = {}
        self._kept_md: dict = {}

    # -- waiting ---------------------------------------------------------------------

    def wait(self, timeout=-1, return_when=None):
        """Wait up to ``timeout`` seconds (forever if None or negative); True if done.

        With ``return_when`` (``FIRST_COMPLETED``, ``FIRST_EXCEPTION``, ``ALL_COMPLETED``)
        returns ``(done, pending)``, sets of one ``AsyncResult`` per task (``split()``),
        as ``concurrent.futures.wait`` does and ipyparallel 8+ does.
        """
        if return_when is not None:
            if timeout is not None and timeout < 0:
                timeout = None
            return concurrent.futures.wait(self.split(), timeout=timeout,
                                           return_when=return_when)
        if self._resolved:
            return True
        if timeout is not None and timeout < 0:
            timeout = None
        try:
            done = self._client._wait(self._completion_ids(), timeout)
        except error.ControllerLost as e:
            self._settle(None, e, resolved=False)  # tell callbacks and futures waiters
            raise
        if done:
            self._resolve()
            return True
        return False

    def ready(self) -> bool:
        return self.wait(0)

    def done(self) -> bool:
        if self._settled or self.cancelled():
            return True
        try:
            return self.ready()
        except error.ControllerLost:
            return True  # settled with it

    def get(self, timeout=None, return_exceptions=None):
        """The result(s); raises ``TimeoutError`` if not ready within ``timeout``, the
        remote error (single engine) or a ``CompositeError`` (several). With
        ``return_exceptions`` the errors are returned in place of their results."""
        if timeout is not None and timeout < 0:
            timeout = None
        if self.cancelled():
            raise CancelledError()
        if not self.wait(timeout):
            raise error.TimeoutError("Result not ready.")
        if return_exceptions is None:
            return_exceptions = self._return_exceptions
        if return_exceptions and Future.exception(self) is not None:
            return self._per_task(self._raw_results())
        return Future.result(self)

    def result(self, timeout=None):
        return self.get(timeout)

    def exception(self, timeout=None):
        """The error ``get()`` would raise, or None; waits as ``get`` does."""
        if timeout is not None and timeout < 0:
            timeout = None
        if self.cancelled():
            raise CancelledError()
        try:
            if not self.wait(timeout):
                raise error.TimeoutError("Result not ready.")
        except error.ControllerLost:
            pass  # the future has it as its error now
        return Future.exception(self)

    def running(self) -> bool:
        """True while a task has started on an engine and not all are done."""
        if self.done():
            return False
        return any(self._client._started(m) for m in self.msg_ids)

    def cancel(self) -> bool:
        """Cancel tasks that have not started: they are aborted (``Client.abort``) and
        the future becomes cancelled. False once a task started or all are done (as
        ``Future.cancel``); a task that starts while the abort is on its way still runs,
        but its result is dropped."""
        if self.cancelled():
            return True
        if self.running() or self.done():
            return False
        try:
            self._client.abort(self.msg_ids, targets=self._targets, block=False)
        except Exception:
            return False
        with self._condition:
            if self._settled:  # the results came in meanwhile
                return False
            self._settled = True
        Future.cancel(self)  # runs the callbacks
        self.set_running_or_notify_cancel()  # wakes concurrent.futures.wait/as_completed
        return True

    def add_done_callback(self, fn):
        """Call ``fn(self)`` once done, from the client's completion thread (at once if
        done already)."""
        if not self.done():
            Future.add_done_callback(self, fn)
            self._watch()
            return
        Future.add_done_callback(self, fn)

    def __await__(self):
        """``await ar`` in a running event loop (Jupyter's): ``asyncio.wrap_future``."""
        import asyncio

        return asyncio.wrap_future(self).__await__()

    def _completion_ids(self) -> list[str]:
        """The msg_ids whose readiness makes this result done: its tasks' whose results
        the client does not hold yet (``get_result`` of another client's finished task
        holds its result already: nothing will signal it again)."""
        held = self._client._results
        return [m for m in self.msg_ids if m not in held and m not in self._kept]

    def _watch(self):
        if not self._settled and not self.cancelled():
            watcher_of(self._client).watch(self)

    def _resolve_if_done(self):
        """Called by the completion thread: resolve now if every task is done."""
        try:
            self.wait(0)
        except error.ControllerLost:
            pass  # settled with it

    @property
    def r(self):
        """``get()`` as a property."""
        return self.get()

    @property
    def result_dict(self):
        """``get_dict()`` as a property."""
        return self.get_dict()

    def stream_output(self):
        """A context manager during which the tasks' stdout, stderr, rich output and
        errors are shown as they arrive, prefixed by engine (as ipyparallel's)."""
        from corral.client.outputs import stream_output

        return stream_output(self)

    def wait_for_output(self, timeout=-1) -> bool:
        """Output is complete once a result is done here (see the module docs)."""
        return self.wait(timeout)

    def split(self) -> tuple:
        """One ``AsyncResult`` per task, to wait for each on its own (``(self,)`` for one
        task). A map's pieces are plain ``AsyncResult``s whose value is their chunk."""
        if len(self.msg_ids) == 1:
            return (self,)
        targets = self._targets if self._targets else [None] * len(self.msg_ids)
        single = not hasattr(self, "_chunk_sizes")  # a map's task returns a list
        parts = tuple(
            AsyncResult(self._client, [m], single=single, fname=self._fname,
                        targets=None if t is None else [t],
                        return_exceptions=self._return_exceptions)
            for m, t in zip(self.msg_ids, targets))
        for part in parts:
            part.done()  # settles the Future of a task already done, for futures.wait
        return parts

    @classmethod
    def join(cls, *async_results):
        """One ``AsyncResult`` over the tasks of several (of the same client)."""
        if not async_results:
            raise ValueError("Must specify at least one AsyncResult to join")
        if len(async_results) == 1:
            return async_results[0]
        first = async_results[0]
        msg_ids = [m for ar in async_results for m in ar.msg_ids]
        return cls(first._client, msg_ids, fname=first._fname,
                   return_exceptions=first._return_exceptions)

    def successful(self) -> bool:
        if not self.ready():
            raise RuntimeError("Cannot check successful() if not done.")
        return Future.exception(self) is None

    def get_dict(self, timeout=None) -> dict:
        """``{engine_id: result}``; ``ValueError`` if an engine ran several of the tasks."""
        results = self.get(timeout)
        if self._single_result:
            results = [results]
        ids = [md["engine_id"] for md in self._metadata_list()]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"Cannot build dict: engines {repeated} ran more than one of "
                             f"these {len(ids)} tasks")
        return dict(zip(ids, results))

    def _raw_results(self) -> list:
        """One result per task, errors in place (``return_exceptions``)."""
        return [self._kept[m] if m in self._kept else self._client._result(m)
                for m in self.msg_ids]

    def _reconstruct(self):
        """The value of done tasks, or raises their error."""
        results = self._raw_results()
        if self._single_result:
            if isinstance(results[0], Exception):
                raise results[0]
            return results[0]
        return error.collect_exceptions(results, self._fname)

    def _resolve(self):
        try:
            value, exc = self._reconstruct(), None
        except Exception as e:
            value, exc = None, e
        if self._owner:
            self._take_ownership()
        self._settle(value, exc)

    def _settle(self, value, exc, resolved=True):
        """Finish the Future once, whichever thread gets here first (the caller's or the
        completion thread); callbacks run outside the lock. Not ``resolved`` (controller
        lost): later waits raise again, as before."""
        with self._condition:
            if self._settled:  # by another thread, by cancel()
                return
            self._settled = True
            self._resolved = resolved
            self._t_done = time.monotonic()
        if exc is None:
            Future.set_result(self, value)
        else:
            Future.set_exception(self, exc)

    # -- live views of the tasks -----------------------------------------------------

    def _take_ownership(self):
        """See ``owner``: fetched results move here, the client's own are unlisted."""
        client = self._client
        fetched = [m for m in self.msg_ids if not client._is_local(m)]
        for m in fetched:
            if m in client._results:
                self._kept[m] = client._results[m]
            if m in client._hub_md:
                self._kept_md[m] = client._hub_md[m]
        client._release_hub_results(fetched)
        client._owned.update(m for m in self.msg_ids if m not in fetched)

    def _metadata_list(self):
        client = self._client
        mds = []
        for m in self.msg_ids:
            if m in self._kept_md and m not in client._hub_md:
                md = dict(self._kept_md[m])
                md["data"] = client._read_data([m])[0]
                mds.append(md)
            else:
                mds.append(client._metadata(m))
        return mds

    def _per_task(self, values):
        return values[0] if self._single_result else values

    @property
    def data(self):
        """Latest published data: one dict per engine (a single dict for one engine)."""
        return self._per_task(self._client._take_data(self.msg_ids))

    @property
    def data_meta(self):
        """Per engine (one dict per task, a single one for one engine): the sequence
        number, time and age (s) of the latest published snapshot, whether the engine is
        alive (else when it died), and counters of updates published (as the controller
        recorded them), received here and conflated here. See
        ``corral.client.hubresult.data_meta``."""
        from corral.client.hubresult import data_meta

        return self._per_task(data_meta(self._client, self.msg_ids))

    @property
    def data_history(self):
        """Per task, the published updates the controller still holds (a bounded
        history, then the latest), oldest first: ``{seq, engine_id, engine_uuid,
        published, received, data}`` each, ``data`` being what that update published."""
        from corral.client.hubresult import data_history

        return self._per_task(data_history(self._client, self.msg_ids))

    @property
    def stdout(self):
        return self._per_task([md["stdout"] for md in self._metadata_list()])

    @property
    def stderr(self):
        return self._per_task([md["stderr"] for md in self._metadata_list()])

    @property
    def metadata(self):
        return self._per_task(self._metadata_list())

    @property
    def engine_id(self):
        return self._per_task([md["engine_id"] for md in self._metadata_list()])

    def __getattr__(self, key):
        """Metadata keys as attributes, per task (``ar.engine_uuid``, ``ar.completed``,
        ``ar.execute_result``, ...), as ipyparallel's AsyncResult has them."""
        if key.startswith("_"):
            raise AttributeError(key)
        mds = self._metadata_list()
        if key not in mds[0]:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")
        return self._per_task([md[key] for md in mds])

    def __getitem__(self, key):
        """An int or slice indexes the results (waiting for them); a str is a metadata key."""
        if isinstance(key, str):
            mds = self._metadata_list()
            if key not in mds[0]:
                raise KeyError(key)
            return self._per_task([md[key] for md in mds])
        if isinstance(key, (int, slice)):
            results = self.get()
            if self._single_result:
                results = [results]
            return results[key]
        raise TypeError(f"Invalid key type {type(key).__name__!r} (expected int, slice or str)")

    @property
    def sent(self) -> bool:
        """Whether the requests have left (always, once submitted: corral sends at once)."""
        return True

    def wait_for_send(self, timeout=-1) -> bool:
        """True: the buffers were copied when the request was submitted (``track``)."""
        return True

    def timedelta(self, start, end, start_key=min, end_key=max) -> float:
        """Seconds between ``start_key`` of the ``start`` datetimes and ``end_key`` of the
        ``end`` ones (each a datetime or a list of them)."""
        if not isinstance(start, datetime):
            start = start_key(start)
        if not isinstance(end, datetime):
            end = end_key(end)
        return (end - start).total_seconds()

    def _dates(self, key):
        if not self.ready():
            raise error.TimeoutError("Result not ready.")
        dates = [md[key] for md in self._metadata_list()]
        if any(not isinstance(d, datetime) for d in dates):
            raise RuntimeError(f"no {key!r} time for every task")
        return dates

    @property
    def wall_time(self) -> float:
        """Seconds from the first submission to the last completion."""
        return self.timedelta(self._dates("submitted"), self._dates("completed"))

    @property
    def serial_time(self) -> float:
        """The tasks' run times, added up (what they would take one after another)."""
        return sum((c - s).total_seconds()
                   for s, c in zip(self._dates("started"), self._dates("completed")))

    @property
    def progress(self) -> int:
        """How many of the tasks are done."""
        client = self._client
        return sum(1 for m in self.msg_ids
                   if m in self._kept or m in client._results or client._core.ready(m))

    @property
    def elapsed(self) -> float:
        """Seconds since submission (until completion, once done)."""
        end = self._t_done if self._t_done is not None else time.monotonic()
        return end - self._t0

    def iter_data(self, timeout=None):
        """Yield ``data`` each time new publications arrive, until the tasks are done
        (then once more with the final values). What ipyparallel lacks: the I/O thread
        wakes this loop on each batch of updates, no polling involved."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            received, done = self._client._wait_data(self.msg_ids, seen, remaining)
            if received > seen or done:
                seen = received
                yield self.data
            if done:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise error.TimeoutError("Result not ready.")

    def on_data(self, callback, timeout=None):
        """Call ``callback(data)`` on each batch of new publications, from a background
        thread, until the tasks are done; returns that thread (``join()`` to wait)."""
        import threading

        def watch():
            for data in self.iter_data(timeout):
                callback(data)

        thread = threading.Thread(target=watch, name=f"corral-on-data-{self.msg_ids[0]}", daemon=True)
        thread.start()
        return thread

    # -- control and display ---------------------------------------------------------

    def abort(self):
        """Abort those of my tasks that have not started (``Client.abort``); raises
        ``RuntimeError`` if all are done already."""
        if self.ready():
            raise RuntimeError("Can't abort, I am already done!")
        return self._client.abort(self.msg_ids, targets=self._targets, block=True)

    def wait_interactive(self, interval=0.1, timeout=-1, widget=None, return_when=None):
        """Wait, printing a progress line (tqdm's if installed) every ``interval`` s;
        with ``return_when=FIRST_EXCEPTION`` (or ``FIRST_COMPLETED``) stop as soon as that
        happens. (``widget`` is accepted for ipyparallel's sake: the bar is tqdm's.)"""
        from corral.client.display import wait_interactive

        wait_interactive(self, interval, timeout, return_when=return_when)

    def display_data(self, max_fps=4.0, static=None):
        """Show the published data live (a ``corral.widgets.DataView``: table, plots,
        progress), or a snapshot where no widget frontend exists; returns the view."""
        from corral.widgets import display_data

        return display_data(self, max_fps=max_fps, static=static)

    def display_outputs(self, groupby="type", result_only=False):
        """Show the engines' stdout/stderr under ``[stdout:<id>]`` headers, their rich
        output under ``[output:<id>]`` and ``Out[<id>:<n>]`` values, in IPython (see
        ``corral.client.outputs``); ``RuntimeError`` if not done yet, rather than
        waiting without a limit."""
        from corral.client.display import display_outputs

        display_outputs(self, groupby, result_only)

    def __len__(self):
        return len(self.msg_ids)

    def __iter__(self):
        result = self.get()
        yield from ([result] if self._single_result else result)

    def __repr__(self):
        state = "finished" if self._resolved else "cancelled" if self.cancelled() else "pending"
        return f"<AsyncResult({self._fname}): {state}>"


class CoalescedResult(AsyncResult):
    """The result of a coalesced broadcast (``BroadcastView(is_coalescing=True)``): the
    controller combines the engines' replies into one, so one reply arrives however many
    engines ran it. ``msg_ids`` are still the engines' copies, which collect each engine's
    output and published data as usual; the combined reply (``request_id``) holds the
    results, which are ready once it and every engine's output have arrived."""

    def __init__(self, client, request_id, msg_ids, **kwargs):
        super().__init__(client, msg_ids, **kwargs)
        self.request_id = request_id

    def _completion_ids(self) -> list[str]:
        return [self.request_id]

    def _raw_results(self) -> list:
        return self._client._coalesced_results(self.request_id, len(self.msg_ids),
                                               self._targets)
