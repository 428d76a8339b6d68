"""Views: where requests go. ``DirectView`` addresses engines by id through the MUX;
``BroadcastView`` does the same with one message through the broadcast scheduler;
``LoadBalancedView`` lets the task scheduler pick an engine.

Everything a view offers is built on one primitive, ``_submit_apply`` (one
``apply_request`` to one engine or to the scheduler): ``map`` cuts sequences into such
requests (``map.py``), and the namespace operations (push, pull, scatter, gather) apply
small helper functions on the engines (``remote_helpers.py``), as ipyparallel does.
"""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from contextlib import contextmanager

from corral import error, serialize
from corral.client import remote_helpers
from corral.client.asyncresult import AsyncResult, CoalescedResult
from corral.dependency import render_dependency
from corral.client.map import AsyncMapResult, check_dist, map_on_view, partition
from corral.client.remotefunction import ParallelFunction, RemoteFunction
from corral.serialize import apply_wants_canning, pack_apply_message

__all__ = ["BroadcastView", "DirectView", "LoadBalancedView", "View"]


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside this package
    (views are made through the client's methods, at varying depths)."""
    here = os.path.dirname(__file__)
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == here:
        frame, level = frame.f_back, level + 1
    return level


class View:
    """Common parts: ``block`` (default False, as in ipyparallel), the apply and map
    families, and the ``remote``/``parallel`` decorators."""

    _balanced = False
    #: Attributes that ``set_flags`` and ``temp_flags`` may change.
    _flag_names: tuple[str, ...] = ("block", "targets", "label", "track")
    #: Sent with each request and echoed in its metadata (``ar.label``), as ipyparallel's.
    label = None
    #: Accepted for ipyparallel's sake: corral copies the buffers when a request is
    #: submitted, so they may be reused at once and there is nothing to track.
    track = False

    def __init__(self, client, targets=None, block=None, **flags):
        self.client = client
        self.targets = targets
        #: Unless given, the client's ``block`` when the view was made, as in ipyparallel.
        self.block = bool(getattr(client, "block", False)) if block is None else block
        #: msg_ids of the requests sent through this view, oldest first (cleared by the
        #: client's ``purge_everything``).
        self.history: list[str] = []
        client._views.add(self)
        self._set_given_flags(flags)

    def _set_given_flags(self, flags: dict) -> None:
        """Flags given as keywords when the view is made (``rc.direct_view(label="x")``).
        ipyparallel's views are traitlets objects, which set the keywords that are traits
        and ignore the rest with a warning; corral sets its flags and warns of the rest,
        naming the flag that was probably meant."""
        for name in [n for n in flags if n not in self._flag_names]:
            del flags[name]
            close = difflib.get_close_matches(name, [*self._flag_names, "is_coalescing"], 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            warnings.warn(f"{type(self).__name__} has no option {name!r}; it is ignored{hint}",
                          RuntimeWarning, stacklevel=_caller_level())
        self.set_flags(**flags)

    def _send(self, channel, target_uuid, msg_type, content, metadata, buffers) -> str:
        msg_id = self.client._submit(channel, target_uuid, msg_type, content, metadata,
                                     buffers)
        self.history.append(msg_id)
        return msg_id

    # -- flags -----------------------------------------------------------------------

    def set_flags(self, **flags):
        """Set this view's flags (``block``, ``targets``; a load-balanced view also has
        ``after``, ``follow``, ``timeout``, ``retries``). Returns the view, so that
        ``view.set_flags(label="x").map_async(...)`` works, as in ipyparallel."""
        for name, value in flags.items():
            if name not in self._flag_names:
                raise KeyError(f"Invalid name: {name!r}; flags are {list(self._flag_names)}")
            self._check_flag(name, value)
        for name, value in flags.items():
            setattr(self, name, value)
        return self

    def _check_flag(self, name, value):
        pass

    @contextmanager
    def temp_flags(self, **flags):
        """``with view.temp_flags(block=True): ...``: flags for the block only."""
        saved = {name: getattr(self, name) for name in self._flag_names}
        self.set_flags(**flags)
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(self, name, value)

    # -- waiting ---------------------------------------------------------------------

    @property
    def outstanding(self) -> set[str]:
        """msg_ids sent through this view that are not done yet."""
        return self.client._still_outstanding(self.history)

    def get_result(self, indices_or_msg_ids=None, block=None, owner=False):
        """``Client.get_result``, with ints indexing this view's own ``history``."""
        if indices_or_msg_ids is None:
            indices_or_msg_ids = -1
        if isinstance(indices_or_msg_ids, int):
            indices_or_msg_ids = self.history[indices_or_msg_ids]
        elif isinstance(indices_or_msg_ids, (list, tuple, set)):
            indices_or_msg_ids = [self.history[i] if isinstance(i, int) else i
                                  for i in indices_or_msg_ids]
        return self.client.get_result(indices_or_msg_ids, block=block, owner=owner)

    def wait(self, jobs=None, timeout=-1) -> bool:
        """Wait for ``jobs`` (msg_ids, ``AsyncResult``s, or indices into ``history``;
        default: everything this view sent) for up to ``timeout`` seconds (forever if
        negative or None). True if they are all done."""
        if jobs is None:
            jobs = self.history
        elif isinstance(jobs, int):
            jobs = self.history[jobs]
        elif isinstance(jobs, (list, tuple, set)):
            jobs = [self.history[j] if isinstance(j, int) else j for j in jobs]
        return self.client.wait(jobs, timeout)

    # -- apply -----------------------------------------------------------------------

    # ``f`` is positional-only, so the remote function may take a keyword named ``f``.
    def apply(self, f, /, *args, **kwargs):
        """Call ``f(*args, **kwargs)`` remotely; blocks (returns the result) if ``self.block``."""
        return self._apply(f, args, kwargs, self.block)

    def apply_async(self, f, /, *args, **kwargs) -> AsyncResult:
        return self._apply(f, args, kwargs, False)

    def apply_sync(self, f, /, *args, **kwargs):
        return self._apply(f, args, kwargs, True)

    def _apply(self, f, args, kwargs, block):
        raise NotImplementedError

    def _submit_apply(self, f, args, kwargs, target=None) -> str:
        """Send one ``apply_request`` (to engine ``target``, or to the scheduler)."""
        engines = None if target is None else [target]
        return self._submit_packed(self._pack(f, args, kwargs, engines), target)

    def _pack(self, f, args, kwargs, engine_ids=None) -> list:
        """``pack_apply_message``, in ipyparallel's canned form when a function that runs
        in the engine's namespace goes to a stock engine (``engine_ids``; None: any engine
        this view may use)."""
        for_stock = apply_wants_canning(f, args, kwargs) and self._to_stock(engine_ids)
        return pack_apply_message(f, args, kwargs, for_stock=for_stock)

    def _to_stock(self, engine_ids=None) -> bool:
        """Whether a request to ``engine_ids`` (None: to this view's engines) may reach a
        stock ipyparallel engine."""
        if engine_ids is None:
            engine_ids = self._possible_engines()
        return self.client._any_stock_engine(engine_ids)

    def _possible_engines(self) -> list[int]:
        raise NotImplementedError

    def _submit_packed(self, buffers, target) -> str:
        """``_submit_apply`` with the call already packed (``pack_apply_message``)."""
        return self._packed_submitter()(buffers, target)

    def _packed_submitter(self):
        """``submit(buffers, target) -> msg_id`` for many requests in a row (a ``map``):
        what does not change between them (checks, metadata) is worked out once."""
        raise NotImplementedError

    @staticmethod
    def _finish(ar: AsyncResult, block: bool):
        return ar.get() if block else ar

    # -- map -------------------------------------------------------------------------

    def map(self, f, *sequences, block=None, **kwargs):
        """Parallel builtin ``map``: the flat list of results if blocking, else an
        ``AsyncMapResult`` that can be iterated while chunks complete."""
        block = self.block if block is None else block
        return map_on_view(self, f, sequences, block, **kwargs)

    def map_async(self, f, *sequences, **kwargs) -> AsyncMapResult:
        if "block" in kwargs:
            raise TypeError("map_async doesn't take a `block` keyword argument.")
        return self.map(f, *sequences, block=False, **kwargs)

    def map_sync(self, f, *sequences, **kwargs) -> list:
        if "block" in kwargs:
            raise TypeError("map_sync doesn't take a `block` keyword argument.")
        return self.map(f, *sequences, block=True, **kwargs)

    def imap(self, f, *sequences, **kwargs):
        """An iterator over ``map(f, *sequences)``'s results as they complete."""
        return iter(self.map_async(f, *sequences, **kwargs))

    @property
    def executor(self):
        """This view as a ``concurrent.futures.Executor`` (``submit``, ``map``)."""
        from corral.client.executor import ViewExecutor

        return ViewExecutor(self)

    # -- serialization -----------------------------------------------------------------

    def use_dill(self):
        """Pickle with dill, here and on this view's engines (see ``serialize.switch``);
        an ``AsyncResult`` of the engines' switch, or None once done if ``block``."""
        return self._switch_serializer(serialize.use_dill)

    def use_cloudpickle(self):
        """Functions keep the globals they were sent with (client values win), here and
        on this view's engines."""
        return self._switch_serializer(serialize.use_cloudpickle)

    def use_pickle(self):
        """Undo ``use_dill``/``use_cloudpickle``, here and on this view's engines."""
        return self._switch_serializer(serialize.use_pickle)

    def _switch_serializer(self, switch):
        """The switch runs here, then on the engines ahead of this view's next requests:
        a direct or broadcast view sends it on its own path, which keeps each engine's
        order (as ipyparallel does); a load-balanced view's tasks take another path than
        a switch sent to every engine, so it waits for the switch."""
        switch()
        if not self._balanced:
            return self._apply(switch, (), {}, self.block)
        ar = self._every_engine()._apply(switch, (), {}, False)
        done = ar.get()
        return done if self.block else ar

    def _every_engine(self) -> "DirectView":
        """A DirectView of every engine this view may use (for a load-balanced view, all
        of them unless it has targets): what must be set up on each."""
        targets = "all" if self._balanced and self.targets is None else self.targets
        return DirectView(self.client, targets)

    def sync_imports(self, local=True, quiet=False):
        """``with view.sync_imports(): import numpy``: the imports written in the block
        run here and on this view's engines (all of them, for a load-balanced view)."""
        from corral.client.sync_imports import sync_imports

        return sync_imports(self._every_engine(), local, quiet)

    @property
    def importer(self):
        """``sync_imports()`` as a property: ``with view.importer: import numpy``."""
        return self.sync_imports()

    def register_joblib_backend(self, name="ipyparallel", make_default=False):
        """Make this view the joblib backend ``name``:
        ``joblib.Parallel(backend='ipyparallel')`` then runs on its engines."""
        from corral.client.joblib import register_view

        register_view(self, name, make_default)

    # -- decorators ------------------------------------------------------------------

    def remote(self, block=None, **flags):
        """Decorator: calling the function runs it through this view (``apply``)."""
        def wrap(f):
            return RemoteFunction(self, f, block=block, **flags)
        return wrap

    def parallel(self, dist="b", block=None, **flags):
        """Decorator: calling the function runs it on chunks of its sequence arguments
        across the view (contiguous, or round robin with ``dist='r'``), joining the
        results; ``.map`` maps it element-wise."""
        check_dist(dist)

        def wrap(f):
            return ParallelFunction(self, f, block=block, dist=dist, **flags)
        return wrap

    # -- control ---------------------------------------------------------------------

    def abort(self, jobs=None, targets=None, block=None):
        """Abort queued tasks (see ``Client.abort``; default: those this view sent that
        are still outstanding) on this view's engines."""
        if jobs is None:
            jobs = sorted(self.outstanding)
            if not jobs:
                return None
        return self.client.abort(jobs, targets=self.targets if targets is None else targets,
                                 block=self.block if block is None else block)

    def activate(self, suffix=""):
        """Make this view the one the ``%px`` magics run on in IPython (``%px<suffix>``,
        ``%%px<suffix>``, ``%autopx<suffix>``, ``%pxresult<suffix>``,
        ``%pxconfig<suffix>``), so several views can have magics side by side."""
        from corral.client.magics import activate_view

        activate_view(self, suffix)

    def __len__(self):
        """How many engines the view may use: its targets, or every engine."""
        if isinstance(self.targets, int):
            return 1
        if self.targets is None or self.targets == "all":
            return len(self.client.ids)
        return len(self.targets)

    def __repr__(self):
        return f"<{type(self).__name__} {self.targets!r}>"


class DirectView(View):
    """Requests to specific engines. An int target gives single results; a list (or
    ``"all"``, resolved at each call) gives lists, one entry per engine."""

    def __init__(self, client, targets="all", block=None, **flags):
        super().__init__(client, targets, block, **flags)

    def _target_ids(self, targets=None) -> list[int]:
        ids, _ = self._resolve(targets)
        return ids

    def __len__(self):
        """How many engines the view targets (``len(rc[:])``), as in ipyparallel."""
        return len(self._target_ids())

    def _resolve(self, targets=None) -> tuple[list[int], bool]:
        """Engine ids and whether results are single values; ``targets`` overrides the
        view's own for one call, as ipyparallel's ``targets=`` arguments do."""
        targets = self.targets if targets is None else targets
        ids = self.client._build_targets(targets)[1]  # ipyparallel's way, patchable too
        if not ids:
            raise error.NoEnginesRegistered()
        return ids, isinstance(targets, int)

    def _send_each(self, ids, msg_type, content, buffers) -> list[str]:
        """The same request to every engine in ``ids``, one message each through the MUX;
        their msg_ids, in the order of ``ids``."""
        return [self._send("mux", uuid, msg_type, content, {"label": self.label}, buffers)
                for uuid in self.client._uuids(ids)]

    def _packed_submitter(self):
        return lambda buffers, target: self._send_each([target], "apply_request", {},
                                                       buffers)[0]

    def _possible_engines(self) -> list[int]:
        return self._resolve()[0]

    def _apply(self, f, args, kwargs, block, targets=None, fname=None):
        ids, single = self._resolve(targets)
        buffers = self._pack(f, args, kwargs, ids)
        msg_ids = self._send_each(ids, "apply_request", {}, buffers)
        name = fname or getattr(f, "__name__", "f")
        ar = AsyncResult(self.client, msg_ids, single=single, fname=name, targets=ids,
                         owner=True)
        return self._finish(ar, block)

    def _block(self, block):
        return self.block if block is None else block

    # -- code ------------------------------------------------------------------------

    def execute(self, code, silent=True, targets=None, block=None):
        """Run ``code`` (a string) in each engine's namespace. Returns the ``AsyncResult``
        either way, as ipyparallel does; blocking waits for it (and its output) first."""
        ids, single = self._resolve(targets)
        content = {"code": code, "silent": bool(silent), "user_expressions": {}}
        msg_ids = self._send_each(ids, "execute_request", content, [])
        ar = AsyncResult(self.client, msg_ids, single=single, fname="execute", targets=ids,
                         owner=True)
        if self._block(block):
            ar.get()
            ar.wait_for_output()
        return ar

    def run(self, filename, targets=None, block=None):
        """Execute the contents of the local file ``filename`` on the engines."""
        with open(filename) as f:
            code = f.read() + "\n"  # a trailing indented line must still parse
        return self.execute(code, targets=targets, block=block)

    # -- namespace -------------------------------------------------------------------

    def push(self, ns, targets=None, block=None, track=None):
        """Bind each item of the dict ``ns`` as a name in the engines' namespaces.
        (``track`` is accepted as in ipyparallel: the buffers are copied at submission.)"""
        if not isinstance(ns, dict):
            raise TypeError(f"Must be a dict, not {type(ns)}")
        return self._apply(remote_helpers.push, (), ns, self._block(block), targets, "push")

    def update(self, ns):
        return self.push(ns)

    def pull(self, names, targets=None, block=None):
        """The value of a name (or a list of values for a list of names) on each engine."""
        if not isinstance(names, str):
            if not isinstance(names, (list, tuple, set)):
                raise TypeError(f"names must be strs, not {names!r}")
            for name in names:
                if not isinstance(name, str):
                    raise TypeError(f"keys must be str, not type {type(name)!r}")
            names = list(names)
        return self._apply(remote_helpers.pull, (names,), {}, self._block(block), targets,
                           "pull")

    def get(self, key_s):
        return self.pull(key_s, block=True)

    def __getitem__(self, key):
        return self.get(key)

    def __setitem__(self, key, value):
        self.push({key: value}, block=True)

    def scatter(self, key, seq, dist="b", flatten=False, targets=None, block=None, track=None):
        """Cut ``seq`` into chunks, one per engine, bound to ``key`` on each: contiguous,
        or with ``dist='r'`` round robin. With ``flatten``, a one-element chunk is bound
        as the element itself."""
        ids, _ = self._resolve(targets)
        msg_ids = []
        for index, engine in enumerate(ids):
            part = partition(seq, index, len(ids), dist=dist)
            value = part[0] if flatten and len(part) == 1 else part
            msg_ids.append(self._submit_apply(remote_helpers.push, (), {key: value}, engine))
        ar = AsyncResult(self.client, msg_ids, fname="scatter", targets=ids, owner=True)
        if self._block(block):
            ar.get()
            return None
        return ar

    def gather(self, key, dist="b", targets=None, block=None):
        """Inverse of ``scatter`` (with the same ``dist``): ``key``'s chunks from each
        engine, joined in order."""
        check_dist(dist)
        ids, _ = self._resolve(targets)
        msg_ids = [self._submit_apply(remote_helpers.pull, (key,), {}, i) for i in ids]
        ar = AsyncMapResult(self.client, msg_ids, fname="gather", targets=ids, dist=dist)
        return self._finish(ar, self._block(block))

    def clear(self, targets=None, block=None):
        """Reset the engines' namespaces."""
        return self.client.clear(self.targets if targets is None else targets,
                                 block=self._block(block))


class BroadcastView(DirectView):
    """A ``DirectView`` whose requests go to the broadcast scheduler as one message, which
    the controller copies to every target engine: one send from the client however many
    engines there are. Results, data and output are per engine, as with a DirectView.

    ``is_coalescing=True``: the controller also combines the engines' replies into one,
    so one message comes back too (for ``apply`` and what is built on it: ``push``,
    ``pull``, ``dv['a']``); ``ar.get()`` is still one result per engine, and each
    engine's output and data stay its own. ``execute``, ``scatter``, ``gather`` and
    ``map`` are not coalesced (ipyparallel does not coalesce the last three either).
    """

    def __init__(self, client, targets="all", block=None, is_coalescing=False, **flags):
        super().__init__(client, targets, block, **flags)
        self.is_coalescing = bool(is_coalescing)

    def _send_each(self, ids, msg_type, content, buffers) -> list[str]:
        targets = list(zip(self.client._uuids(ids), ids))
        msg_ids = self.client._submit_broadcast(targets, msg_type, content, {"label": self.label},
                                                buffers)
        self.history.extend(msg_ids)
        return msg_ids

    def _apply(self, f, args, kwargs, block, targets=None, fname=None):
        if not self.is_coalescing:
            return super()._apply(f, args, kwargs, block, targets=targets, fname=fname)
        ids, single = self._resolve(targets)
        buffers = self._pack(f, args, kwargs, ids)
        request_id, msg_ids = self.client._submit_broadcast(
            list(zip(self.client._uuids(ids), ids)), "apply_request", {},
            {"label": self.label}, buffers, coalescing=True)
        self.history.append(request_id)
        ar = CoalescedResult(self.client, request_id, msg_ids, single=single,
                             fname=fname or getattr(f, "__name__", "f"), targets=ids)
        return self._finish(ar, block)


class LoadBalancedView(View):
    """Each call becomes one task that the scheduler sends to a free engine."""

    _balanced = True
    _flag_names = ("block", "targets", "label", "track", "after", "follow", "timeout",
                   "retries")

    def __init__(self, client, targets=None, block=None, retries=0, timeout=0.0,
                 after=None, follow=None, **flags):
        super().__init__(client, targets, block, **flags)
        self.set_flags(retries=retries, timeout=timeout, after=after, follow=follow)

    def _check_flag(self, name, value):
        if name == "timeout" and value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError(f"Invalid type for timeout: {type(value).__name__}")
        if name == "retries" and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"Invalid type for retries: {type(value).__name__}")
        if name in ("after", "follow"):
            render_dependency(value)  # raises on what cannot be a dependency

    def _packed_submitter(self):
        if not self.client.ids:
            raise error.NoEnginesRegistered()
        if self.targets is None:
            uuids = []
        else:
            ids = [self.targets] if isinstance(self.targets, int) else list(self.targets)
            uuids = self.client._uuids(ids)
        metadata = {
            "after": render_dependency(self.after), "follow": render_dependency(self.follow),
            "timeout": float(self.timeout or 0.0), "targets": uuids,
            "retries": int(self.retries), "label": self.label,
        }
        send = self._send
        return lambda buffers, target=None: send("task", None, "apply_request", {}, metadata,
                                                 buffers)

    def _possible_engines(self) -> list[int]:
        if self.targets is None:
            return self.client.ids
        return [self.targets] if isinstance(self.targets, int) else list(self.targets)

    def _apply(self, f, args, kwargs, block):
        msg_id = self._submit_apply(f, args, kwargs)
        ar = AsyncResult(self.client, [msg_id], single=True,
                         fname=getattr(f, "__name__", "f"), owner=True)
        return self._finish(ar, block)

    def imap(self, f, *sequences, ordered=True, max_outstanding="auto",
             return_exceptions=False):
        """A lazy ``map``: yields ``f(*args)`` for ``args`` in ``zip(*sequences)``,
        reading the inputs (iterators, infinite ones too) only as results are taken, with
        at most ``max_outstanding`` tasks in flight (``"auto"``: one per engine; 0: no
        limit). In submission order unless ``ordered=False``."""
        from corral.client.imap import lazy_imap

        return lazy_imap(self, f, sequences, ordered=ordered, max_outstanding=max_outstanding,
                         return_exceptions=return_exceptions)

    def map(self, f, *sequences, block=None, chunksize=1, ordered=True,
            return_exceptions=False):
        """Parallel builtin ``map``: one task per ``chunksize`` elements, placed by the
        scheduler; iterating the ``AsyncMapResult`` yields results as tasks finish
        (in submission order unless ``ordered=False``)."""
        block = self.block if block is None else block
        return map_on_view(self, f, sequences, block, chunksize=chunksize, ordered=ordered,
                           return_exceptions=return_exceptions)
