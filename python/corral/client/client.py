"""``Client``: a connection to a cluster's controller, and the views onto its engines.

Finding the cluster follows IPython/ipyparallel: ``<profile_dir>/security/
ipcontroller[-<cluster_id>]-client.json``. The Rust core (``corral._core.ClientCore``)
owns the sockets; this class turns its raw replies into Python values, caches them and
merges published data.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from corral import error
from corral._core import ClientCore
from corral.client import arguments
from corral.client.asyncresult import AsyncResult, msg_ids_of
from corral.client.engine_kinds import EngineKinds
from corral.client.execute_reply import ExecuteReply
from corral.client.hub import Hub
from corral.client.hubresult import AsyncHubResult, HubData, record_metadata
from corral.client.replies import decode_reply, parse_date
from corral.client.targets import resolve_targets
from corral.client.view import BroadcastView, DirectView, LoadBalancedView
from corral.connection import find_connection_file
from corral.serialize import deserialize_object

__all__ = ["Client", "find_connection_file"]

log = logging.getLogger(__name__)

_START_HINT = (
    "Start a cluster first, e.g. `corral cluster start -n 4 --daemonize` "
    "(or `corral.Cluster(n=4)` in Python; stock `ipcluster start -n 4` works too)."
)


def _insecure_opt_in(insecure) -> bool:
    """``insecure`` if given, else the ``CORRAL_INSECURE`` environment variable."""
    if insecure is not None:
        return bool(insecure)
    return os.environ.get("CORRAL_INSECURE", "").strip().lower() in ("1", "true", "yes")


def _key_is_empty(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("key", None) == ""
    except (OSError, ValueError, AttributeError):
        return False  # the core reports an unreadable file


def _in_ipython() -> bool:
    """Whether an IPython shell runs here (not importing IPython to find out)."""
    ipython = sys.modules.get("IPython")
    return ipython is not None and ipython.get_ipython() is not None


def _other_futures(jobs) -> list:
    """The futures among ``jobs`` that are not this library's ``AsyncResult``s."""
    if isinstance(jobs, concurrent.futures.Future):
        jobs = [jobs]
    if jobs is None or isinstance(jobs, (str, int)):
        return []
    return [j for j in jobs if isinstance(j, concurrent.futures.Future)
            and not isinstance(j, AsyncResult)]


def _in_target_order(values: list, listed, targets) -> list:
    """``values`` (one per engine, in the order of ``listed``, ``[[uuid, id], ...]``)
    reordered to follow the engine ids ``targets``; as they are when either is unknown."""
    if not targets or not listed:
        return values
    order = [entry[1] for entry in listed]
    if sorted(order) != sorted(targets) or len(order) != len(values):
        return values
    by_id = dict(zip(order, values))
    return [by_id[i] for i in targets]


class Client:
    """A connection to a running cluster (ipyparallel's ``Client``).

    ``c.ids`` are the live engine ids; ``c[i]``, ``c[:]``, ``c[[0, 1]]`` give direct
    views; ``c.load_balanced_view()`` a load-balanced one.
    """

    #: The default ``block`` of views made from here on (``rc.block = True`` makes
    #: ``rc[:]`` blocking), and of the client's own calls that take ``block=None``, as in
    #: ipyparallel.
    block = False

    def __new__(cls, *args, **kwargs):
        # Defined so that `mock.patch.object(Client, "__new__", ...)` (as ipyparallel's own
        # tests do) restores a working constructor: deleting a patched `__new__` from a
        # class that had none leaves CPython calling `object.__new__` with the arguments.
        return super().__new__(cls)

    def __init__(
        self,
        connection_info=None,
        *,
        url_file=None,
        profile=None,
        profile_dir=None,
        ipython_dir=None,
        context=None,
        debug=False,
        sshserver=None,
        sshkey=None,
        password=None,
        paramiko=None,
        timeout=10,
        cluster_id=None,
        cluster=None,
        insecure=None,
        **extra_args,
    ):
        """ipyparallel's arguments (see ``corral.client.arguments`` for what each does
        here): ``connection_info`` is a connection file's path or its dict. ``insecure=True``
        (or ``CORRAL_INSECURE=1``) accepts a connection file with an empty key, i.e.
        unsigned messages; without it such a file is refused."""
        self._closed = True  # until connected, so __del__ and close have nothing to do
        #: The ``Cluster`` this client was started from (``Cluster.connect_client``), or
        #: None. Holding it keeps the cluster alive, and running, as long as its client.
        self.cluster = cluster
        connection_info = arguments.take_deprecated_url_file(connection_info, extra_args)
        ssh = dict(sshserver=sshserver, sshkey=sshkey, password=password, paramiko=paramiko)
        arguments.refuse_unsupported(ssh, context, extra_args)
        arguments.check_connection_info(connection_info)
        if debug:
            logging.getLogger("corral").setLevel(logging.DEBUG)
        source = connection_info if connection_info is not None else url_file
        dict_file = arguments.DictConnectionFile(source) if isinstance(source, dict) else None
        if dict_file is not None:
            path = dict_file.path
        elif source is not None:
            path = find_connection_file(source)
        else:
            path = arguments.profile_connection_file(profile, profile_dir, ipython_dir,
                                                     cluster_id, cluster)
        if not path.exists():
            raise FileNotFoundError(
                f"No cluster found: the connection file {path} does not exist. {_START_HINT}"
            )
        self.url_file = None if dict_file is not None else str(path)
        insecure = _insecure_opt_in(insecure)
        if insecure and _key_is_empty(path):
            log.warning(
                "INSECURE: %s has an empty key, so messages are neither signed nor checked; "
                "anyone who can reach the controller's ports can run code on the engines.",
                path)
        # Client(sshserver=...): the core connects to the local ends of an SSH tunnel.
        self._tunnel, tunnel_file = arguments.open_ssh_tunnel(path, sshserver, sshkey)
        connected = False
        try:
            core_path = tunnel_file.path if tunnel_file is not None else path
            self._core = ClientCore.connect(str(core_path), float(timeout), insecure)
            connected = True
        except TimeoutError as e:
            raise TimeoutError(f"{e} (connection file {path}). {_START_HINT}") from None
        finally:
            for file in (dict_file, tunnel_file):
                if file is not None:
                    file.remove()
            if not connected and self._tunnel is not None:
                self._tunnel.close()
        self._hub = Hub(self._core)
        self._engine_kinds = EngineKinds(self._core)
        self._results: dict[str, object] = {}
        self._data: dict[str, dict] = {}
        #: Metadata of other clients' tasks, from the controller's records.
        self._hub_md: dict[str, dict] = {}
        #: Published data of other clients' tasks: the controller's snapshot, then live.
        self._hub_data = HubData(self)
        #: msg_ids of every apply and execute request sent, oldest first.
        self.history: list[str] = []
        self._outstanding: set[str] = set()
        self._prune_outstanding_at = 1024
        #: This client's tasks whose results an owner ``AsyncResult`` has (a view's, as
        #: ipyparallel's): not listed in ``results``/``metadata`` (see ``AsyncResult``).
        self._owned: set[str] = set()
        #: Views made from this client, so ``purge_everything`` can clear their histories;
        #: weak, so a view the user drops is not kept alive for that.
        self._views: weakref.WeakSet = weakref.WeakSet()
        self._closed = False
        if _in_ipython():
            # As ipyparallel: the first client made inside IPython gets the %px magics.
            from corral.client.magics import activate_first_client

            activate_first_client(self)

    # -- engines ---------------------------------------------------------------------

    @property
    def ids(self) -> list[int]:
        """Sorted ids of the live engines."""
        return [i for i, _ in self._core.engines()]

    @property
    def _ids(self) -> list[int]:
        """``ids`` (ipyparallel's internal name for the list ``ids`` copies)."""
        return self.ids

    def _build_targets(self, targets) -> tuple[list[bytes], list[int]]:
        """``(uuids, ids)`` of the engines ``targets`` names (ipyparallel's helper, which
        direct views resolve their targets with): ``None``/``"all"`` every engine, an
        int one (negative: from the end), a slice of ``ids``, or a list, tuple or range.
        ``NoEnginesRegistered`` without engines, ``IndexError`` for unknown ones."""
        ids = self.ids
        if not ids:
            raise error.NoEnginesRegistered("Can't build targets without any engines")
        if targets is None:
            targets = ids
        elif isinstance(targets, str):
            if targets.lower() != "all":
                raise TypeError(f"{targets!r} not valid str target, must be 'all'")
            targets = ids
        elif isinstance(targets, int):
            if targets < 0 and -targets <= len(ids):
                targets = ids[targets]
            if targets not in ids:
                raise IndexError(f"No such engine: {targets}; live engines are {ids}")
            targets = [targets]
        elif isinstance(targets, slice):
            targets = ids[targets]
        if not isinstance(targets, (tuple, list, range)):
            raise TypeError(
                f"targets by int/slice/collection of ints only, not {type(targets)}")
        # A negative id in a list counts from the end too (corral's views take that).
        targets = [ids[t] if isinstance(t, int) and 0 < -t <= len(ids) else t
                   for t in targets]
        return [u.encode() for u in self._uuids(targets)], targets

    @property
    def _outstanding_dict(self) -> dict[str, set[str]]:
        """The outstanding msg_ids per engine uuid (ipyparallel's attribute of that name),
        for the requests whose engine is known (a load-balanced task's once it runs)."""
        per_engine: dict[str, set[str]] = defaultdict(set)
        for msg_id in self.outstanding:
            task = self._core.task(msg_id)
            if task is not None and task.engine:
                per_engine[task.engine].add(msg_id)
        return per_engine

    @property
    def _engines(self) -> dict:
        """``{engine_id: uuid}`` of the live engines (ipyparallel's attribute of that name,
        which code reaching for an engine's identity uses)."""
        return dict(self._core.engines())

    def _uuid(self, engine_id: int) -> str:
        return self._uuids([engine_id])[0]

    def _uuids(self, engine_ids) -> list[str]:
        """The uuids of ``engine_ids``, from one look at the engine table (a request to
        many engines must not read the whole table once per engine)."""
        engines = dict(self._core.engines())
        missing = [i for i in engine_ids if i not in engines]
        if missing:
            raise IndexError(f"No such engine: {missing[0]}; live engines are {sorted(engines)}")
        return [engines[i] for i in engine_ids]

    def _any_stock_engine(self, engine_ids) -> bool:
        """Whether a stock ipyparallel engine is among ``engine_ids`` (see
        ``engine_kinds``): requests to it carry functions in ipyparallel's canned form."""
        return self._engine_kinds.any_stock(self._uuids(engine_ids))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, key):
        """``c[i]`` one engine (single results); ``c[:]``, ``c[[i, j]]`` several. A
        negative id counts from the end, as in ipyparallel (``c[-1]``: the last engine).
        Goes through ``direct_view``, as ipyparallel's does."""
        return self.direct_view(self._named_targets(key))

    def _named_targets(self, key):
        """The engine id (int key) or ids (slice, list, ...) that ``key`` names now;
        ``IndexError`` for engines that are not registered."""
        ids = self.ids

        def from_end(k):
            return ids[k] if isinstance(k, int) and 0 < -k <= len(ids) else k

        if isinstance(key, int):
            key = from_end(key)
            if key not in ids:
                if not ids:
                    raise error.NoEnginesRegistered()
                raise IndexError(f"No such engine: {key}; live engines are {ids}")
            return key
        if isinstance(key, slice):
            return ids[key]
        if isinstance(key, (list, tuple, range)):
            key = [from_end(k) for k in key]
            missing = [k for k in key if k not in ids]
            if missing:
                raise IndexError(f"No such engines: {missing}; live engines are {ids}")
            return list(key)
        raise TypeError(f"engine index must be int, slice or list, not {type(key).__name__}")

    def direct_view(self, targets="all", **kwargs):
        """A ``DirectView`` on ``targets``: ``"all"`` follows the engines as they come
        and go; anything else names engines now (``-1``: the last one), as ``c[targets]``."""
        if targets is not None and not (isinstance(targets, str) and targets == "all"):
            targets = self._named_targets(targets)
        return DirectView(self, targets, **kwargs)

    def broadcast_view(self, targets="all", is_coalescing=False, **kwargs):
        """A view that sends each request once, to the broadcast scheduler, which copies it
        to every target engine."""
        return BroadcastView(self, targets, is_coalescing=is_coalescing, **kwargs)

    def load_balanced_view(self, targets=None, **kwargs):
        """A ``LoadBalancedView`` over ``targets`` (None or ``"all"``: every engine,
        as they come and go; otherwise a list of the engines named now)."""
        if isinstance(targets, str) and targets == "all":
            targets = None
        if targets is not None:
            named = self._named_targets(targets)
            targets = [named] if isinstance(named, int) else named
        return LoadBalancedView(self, targets, **kwargs)

    def executor(self, targets=None):
        """A ``concurrent.futures.Executor`` load-balancing over ``targets`` (all engines
        by default)."""
        return self.load_balanced_view(targets).executor

    def use_dill(self):
        """Pickle with dill, here and on every engine (``DirectView.use_dill``)."""
        self.direct_view(block=True).use_dill()

    def use_cloudpickle(self):
        """Functions keep the globals they were sent with, here and on every engine."""
        self.direct_view(block=True).use_cloudpickle()

    def use_pickle(self):
        """Undo ``use_dill``/``use_cloudpickle``, here and on every engine."""
        self.direct_view(block=True).use_pickle()

    def become_dask(self, targets="all", port=0, nanny=False, scheduler_args=None,
                    **worker_args):
        """Turn the engines into a dask.distributed cluster: a scheduler run by the
        controller, a worker on each engine; returns a ``distributed.Client`` connected
        to it (see ``corral.client.dask.become_dask``)."""
        from corral.client.dask import become_dask

        return become_dask(self, targets, port, nanny, scheduler_args, **worker_args)

    def stop_dask(self, targets="all"):
        """Stop the dask workers ``become_dask`` started, and the scheduler."""
        from corral.client.dask import stop_dask

        stop_dask(self, targets)

    become_distributed = become_dask
    stop_distributed = stop_dask

    def wait_for_engines(self, n=None, timeout=-1, block=True):
        """Wait until at least ``n`` engines are registered (``TimeoutError`` if not).
        With ``block=False``, a ``concurrent.futures.Future`` of that wait instead."""
        if n is None:
            n = self._cluster_engine_count() or 1
        if timeout is None or timeout < 0:
            timeout = 1e9
        if not block:
            from concurrent.futures import Future

            future: Future = Future()
            if self._core.wait_for_engines(int(n), 0.0) >= n:
                future.set_result(None)  # already there: done at once, as ipyparallel's
                return future

            def wait():
                try:
                    future.set_result(self.wait_for_engines(n, timeout))
                except BaseException as e:  # noqa: BLE001 - handed to the future
                    future.set_exception(e)

            threading.Thread(target=wait, name="corral-wait-for-engines", daemon=True).start()
            return future
        # With a corral cluster, as ipyparallel: an engine set that stops fails the wait at
        # once (`EngineSetExited`, with what its launcher saw), not at the timeout.
        check = getattr(self.cluster, "_check_still_running", None)
        watched = check is not None and bool(getattr(self.cluster, "engines", None))
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            step = min(left, self.cluster.engine_check_interval) if watched else left
            count = self._core.wait_for_engines(int(n), float(step))
            if count >= n:
                return
            if watched:
                check(n)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{count} engine(s) registered after {timeout:g} s, waited for {n}"
                )

    def _cluster_engine_count(self) -> int:
        """How many engines this client's cluster starts (ipyparallel's default ``n`` for
        ``wait_for_engines``), or 0 without a cluster."""
        if self.cluster is None:
            return 0
        return self.cluster.n or sum(s.n for s in self.cluster.engines.values())

    # -- hub queries -----------------------------------------------------------------

    def hub_history(self) -> list[str]:
        """Every msg_id the controller has recorded, from every client, oldest first."""
        return self._hub.history()

    def result_status(self, msg_ids, status_only=True) -> dict:
        """``{'pending': [...], 'completed': [...]}`` for ``msg_ids`` (msg_ids,
        ``AsyncResult``s or indices into ``history``); with ``status_only=False`` also each
        completed result by msg_id, from this client or, for others' tasks, from the
        controller's records."""
        ids = msg_ids_of(msg_ids, self.history)
        local = [m for m in ids if self._core.ready(m)]
        remote = sorted(set(ids) - set(local))
        content: dict = {"pending": [], "completed": []}
        buffers: list = []
        if remote:
            content, buffers = self._hub.results(remote, status_only)
        content["completed"] = list(content["completed"]) + local
        if status_only:
            return {"pending": content["pending"], "completed": content["completed"]}
        failures = []
        for msg_id in local:
            content[msg_id] = self._result(msg_id)
        for msg_id in remote:  # sorted: the controller sends their buffers in this order
            if msg_id not in content["completed"]:
                continue
            value, buffers = self._record_result(msg_id, content[msg_id], buffers)
            if isinstance(value, error.RemoteError):
                failures.append(value)
            content[msg_id] = value
        if len(ids) == 1 and failures:
            raise failures[0]
        return content

    def get_result(self, indices_or_msg_ids=None, block=None, owner=True):
        """An ``AsyncHubResult`` over tasks by msg_id, history index or ``AsyncResult``
        (a list of them for several; the last task sent by default), whoever sent them:
        this client, another one, or this one before it reconnected. Results and output
        come from the controller when this client does not hold them, and ``data`` from
        the controller's snapshot, then live while the task runs. ``owner`` (as
        ipyparallel): the result, once fetched, is held by the ``AsyncHubResult`` and
        dropped from ``Client.results``/``metadata``. Tasks whose results this client
        already holds (its own, or fetched with ``owner=False``) give a plain
        ``AsyncResult``."""
        block = self._block(block)
        if indices_or_msg_ids is None:
            indices_or_msg_ids = -1
        single = isinstance(indices_or_msg_ids, (str, int))
        msg_ids = msg_ids_of(indices_or_msg_ids, self.history)
        if not msg_ids:
            raise ValueError("get_result needs at least one msg_id")
        foreign = [m for m in msg_ids if not self._is_local(m)]
        if all(m in self._results for m in foreign):
            # This client's own tasks, or others' whose results it holds already (fetched
            # by a get_result with owner=False): a plain AsyncResult, as ipyparallel's.
            ar = AsyncResult(self, msg_ids, single=single and len(msg_ids) == 1,
                             fname="get_result", owner=owner)
            if block:
                ar.wait()
            return ar
        # Output and data of others' tasks are filed from now on, not only once read.
        self._core.follow(foreign)
        ar = AsyncHubResult(self, msg_ids, single=single and len(msg_ids) == 1, owner=owner)
        if block:
            ar.wait()
        return ar

    def resubmit(self, indices_or_msg_ids=None, metadata=None, block=None):
        """Run finished tasks again (the controller sends copies of their requests to
        the task scheduler under new msg_ids); an ``AsyncHubResult`` over the copies.
        Tasks still running cannot be resubmitted."""
        if metadata is not None:
            raise TypeError("resubmit(metadata=...) is not supported: ipyparallel ignores "
                            "it too; the copies keep the original requests' metadata")
        block = self._block(block)
        if indices_or_msg_ids is None:
            indices_or_msg_ids = -1
        msg_ids = msg_ids_of(indices_or_msg_ids, self.history)
        mapping = self._hub.resubmit(msg_ids)
        new_ids = [mapping[m] for m in msg_ids]
        self._core.follow(new_ids)
        ar = AsyncHubResult(self, new_ids, fname="resubmit")
        if block:
            ar.wait()
        return ar

    def db_query(self, query, keys=None) -> list[dict]:
        """Task records of the controller matching ``query`` (MongoDB-like:
        ``{key: value}`` or ``{key: {'$in': [...]}}``, ``$nin $eq $ne $gt $gte $lt
        $lte $glob $exists $mod $all``, as ipyparallel's), reduced to ``keys`` (all but
        buffers by default; ``msg_id`` always).
        Dates come back as datetimes, ``buffers``/``result_buffers`` as lists of frames;
        ``data`` (corral's key, named explicitly) is each task's published data, merged as
        ``ar.data`` has it."""
        from corral.client.hubresult import _merge_updates

        if isinstance(keys, str):
            keys = [keys]
        content, buffers = self._hub.db_query(query, keys)
        records = content["records"]
        buffer_lens = content.get("buffer_lens")
        result_buffer_lens = content.get("result_buffer_lens")
        data_lens = content.get("data_buffer_lens")
        for i, rec in enumerate(records):
            for key in ("submitted", "started", "completed", "received"):
                if key in rec:
                    rec[key] = parse_date(rec[key])
            if buffer_lens is not None:
                rec["buffers"], buffers = buffers[:buffer_lens[i]], buffers[buffer_lens[i]:]
            if result_buffer_lens is not None:
                n = result_buffer_lens[i]
                rec["result_buffers"], buffers = buffers[:n], buffers[n:]
        if data_lens is not None:
            for rec in records:
                merged: dict = {}
                for entry in rec.get("data") or []:
                    part, buffers = _merge_updates(entry["updates"], buffers)
                    merged.update(part)
                rec["data"] = merged
        return records

    @property
    def results(self) -> "_Results":
        """Results by msg_id (ipyparallel's ``Client.results``): this client's finished
        tasks and those fetched from the controller (``get_result``)."""
        return _Results(self)

    @property
    def metadata(self) -> "_Metadata":
        """Metadata by msg_id (ipyparallel's ``Client.metadata``) of the tasks this
        client sent or follows."""
        return _Metadata(self)

    def _is_local(self, msg_id: str) -> bool:
        """Whether this client sent the task (its reply comes to this client)."""
        task = self._core.task(msg_id)
        return task is not None and not task.foreign

    def _fetch_hub_results(self, msg_ids) -> None:
        """Results and metadata of finished tasks from the controller's records, cached."""
        ids = sorted(set(msg_ids))
        content, buffers = self._hub.results(ids, status_only=False)
        for msg_id in ids:  # sorted: the controller sends their buffers in this order
            if msg_id not in content["completed"]:
                continue
            record = content[msg_id]
            md = record_metadata(self, msg_id, record)
            value, buffers = self._record_result(msg_id, record, buffers)
            header = record.get("result_header") or {}
            if header.get("msg_type") == "execute_reply" and md["status"] == "ok":
                rc = record.get("result_content") or {}
                value = ExecuteReply(msg_id, json.loads(rc) if isinstance(rc, str) else rc, md)
            self._results[msg_id] = value
            self._hub_md[msg_id] = md

    def _release_hub_results(self, msg_ids) -> None:
        for m in msg_ids:
            self._results.pop(m, None)
            self._hub_md.pop(m, None)

    def _read_data(self, msg_ids) -> list[dict]:
        """Published data per msg_id: this client's tasks from its store, others' from
        the controller's snapshot and then live (``HubData``)."""
        msg_ids = list(msg_ids)
        foreign = [m for m in msg_ids if not self._is_local(m)]
        if not foreign:
            return self._take_data(msg_ids)
        local = [m for m in msg_ids if m not in foreign]
        got = dict(zip(local, self._take_data(local)))
        got.update(zip(foreign, self._hub_data.take(foreign)))
        return [got[m] for m in msg_ids]

    def _record_result(self, msg_id: str, record: dict, buffers: list):
        """The value (or error) of a controller record, and the buffers left."""
        content = record.get("result_content") or {}
        if isinstance(content, str):
            content = json.loads(content)
        return decode_reply(msg_id, record.get("result_header") or {}, content,
                            record.get("result_metadata") or {}, buffers,
                            self._core.engine_id)

    def purge_local_results(self, jobs=(), targets=()):
        """Forget finished results held by this client: ``jobs`` (msg_ids,
        ``AsyncResult``s, or ``'all'``) and everything that ran on the engines ``targets``.
        ``RuntimeError`` if any of them is still outstanding; their ``AsyncResult``s are
        of no use afterwards."""
        if not jobs and not targets:
            raise ValueError("Must specify at least one of `targets` and `jobs`")
        if jobs == "all":
            # As ipyparallel: "all" is everything finished, not only what the history
            # names, so control requests (abort, clear, shutdown) are forgotten too.
            outstanding = self.outstanding
            if outstanding:
                raise RuntimeError(f"Can't purge outstanding tasks: {sorted(outstanding)}")
            self._core.forget_finished()
            self._results.clear()
            self._data.clear()
            self._hub_md.clear()
            self._owned.clear()
            self._hub_data.forget(list(self._hub_data._snapshot_date))
            return
        msg_ids = msg_ids_of(jobs) if jobs else []
        if targets:
            engines = set(self._uuids(self._target_ids(targets)))
            for msg_id in self.history:
                task = self._core.task(msg_id)
                if task is not None and task.engine in engines:
                    msg_ids.append(msg_id)
        outstanding = self.outstanding.intersection(msg_ids)
        if outstanding:
            raise RuntimeError(f"Can't purge outstanding tasks: {sorted(outstanding)}")
        self._core.forget(msg_ids)
        self._hub_data.forget(msg_ids)
        for msg_id in msg_ids:
            self._results.pop(msg_id, None)
            self._data.pop(msg_id, None)
            self._hub_md.pop(msg_id, None)
            self._owned.discard(msg_id)

    def purge_hub_results(self, jobs=(), targets=()):
        """Tell the controller to forget finished results: ``jobs`` (msg_ids,
        ``AsyncResult``s, or ``'all'``) and everything the engines ``targets`` ran."""
        if not jobs and not targets:
            raise ValueError("Must specify at least one of `targets` and `jobs`")
        engine_ids = self._target_ids(targets) if targets else []
        msg_ids = "all" if jobs == "all" else (msg_ids_of(jobs) if jobs else [])
        self._hub.purge(msg_ids, engine_ids)

    def purge_results(self, jobs=(), targets=()):
        """``purge_local_results`` and ``purge_hub_results`` with the same arguments."""
        self.purge_local_results(jobs=jobs, targets=targets)
        self.purge_hub_results(jobs=jobs, targets=targets)

    def purge_everything(self):
        """Forget every finished result, here and in the controller, and the histories:
        the client's and its views' (ipyparallel keeps views' histories; here they go
        too, or a long session that purges would still grow by one msg_id per task)."""
        self.purge_results("all")
        self.history = []
        for view in list(self._views):
            view.history = []

    def queue_status(self, targets="all", verbose=False):
        """Per-engine queue counts ``{id: {queue, completed, tasks}, 'unassigned': n}``."""
        every = targets is None or (isinstance(targets, str) and targets == "all")
        engine_ids = None if every else resolve_targets(targets, lambda: self.ids)[0]
        status = self._hub.queue_status(engine_ids, verbose)
        if isinstance(targets, int):
            return status[targets]
        return status

    def iopub_stats(self) -> dict:
        """This client's IOPub queue on a corral controller: ``forwarded`` (engine messages
        sent to it), ``conflated`` (published-data updates it did not need because newer
        ones re-sent their keys), ``cut_offs`` and ``dropped`` (output lost because it
        stopped reading past the controller's budget), ``queued``/``queued_bytes`` (waiting
        now). Raises on a stock controller, which has no such queue."""
        stats = self._hub.request("iopub_stats_request", {})[0]
        stats.pop("status", None)
        return stats

    def shutdown(self, targets="all", restart=False, hub=False, block=None):
        """Stop engines (control ``shutdown_request``) and, with ``hub=True``, the controller."""
        if hub:
            targets = "all"
        ids, _ = resolve_targets(targets, lambda: self.ids)
        msg_ids = [
            self._core.submit("control", self._uuid(i), "shutdown_request",
                              json.dumps({"restart": bool(restart)}), "{}", [])
            for i in ids
        ]
        if msg_ids:
            self._core.wait(msg_ids, 5.0)
        if hub:
            self._hub.shutdown()

    def _block(self, block) -> bool:
        """A call's ``block``: the client's own when None, as in ipyparallel."""
        return bool(self.block if block is None else block)

    def _target_ids(self, targets) -> list[int]:
        ids, _ = resolve_targets(targets, lambda: self.ids)
        if not ids:
            raise error.NoEnginesRegistered()
        return ids

    def _control(self, msg_type: str, content: dict, targets, block: bool, fname: str):
        """One control request per target engine; an ``AsyncResult`` over the replies
        (None once they arrived, if ``block``). Control requests overtake queued tasks:
        the engine answers abort at once, even while a task runs."""
        ids = self._target_ids(targets)
        msg_ids = [self._submit("control", uuid, msg_type, content, {}, [])
                   for uuid in self._uuids(ids)]
        ar = AsyncResult(self, msg_ids, single=isinstance(targets, int), fname=fname,
                         targets=ids)
        if block:
            ar.get(timeout=30)
            return None
        return ar

    def send_signal(self, sig, targets=None, block=None):
        """Send signal ``sig`` (a number, or a name such as ``"SIGINT"`` that the engine
        looks up) to the target engines' processes (all by default): a
        ``signal_request`` on the control channel, which overtakes queued tasks, so
        ``send_signal("SIGINT")`` interrupts the running one. With ``block``, waits for
        the engines' acknowledgements and raises an engine's error (for instance an
        engine that cannot take signals); else returns an ``AsyncResult`` over them."""
        if isinstance(sig, bool) or not isinstance(sig, (int, str)):
            raise TypeError(f"sig must be a signal number or name, not {sig!r}")
        return self._control("signal_request", {"sig": sig}, targets, self._block(block),
                             "send_signal")

    def activate(self, targets="all", suffix=""):
        """A blocking ``DirectView`` on ``targets`` that the ``%px`` magics (named with
        ``suffix``: ``%px<suffix>``, ``%autopx<suffix>``, ...) run on; returns it."""
        view = self.direct_view(targets)
        view.block = True
        view.activate(suffix)
        return view

    def clear(self, targets=None, block=None):
        """Reset the user namespace of the target engines (all by default)."""
        return self._control("clear_request", {}, targets, self._block(block), "clear")

    def abort(self, jobs=None, targets=None, block=None):
        """Stop queued tasks from running: each gets an ``aborted`` reply, so its
        ``get()`` raises ``TaskAborted``. A task already running is not stopped.

        ``jobs``: a msg_id, an ``AsyncResult`` or a list of them; None: every task of this
        client still outstanding, as in ipyparallel (with none, the engines abort whatever
        is queued). ``targets`` defaults to all engines, which covers load-balanced tasks
        wherever the scheduler sent them.
        """
        if jobs is None:
            msg_ids = sorted(self.outstanding)
        else:
            msg_ids = msg_ids_of(jobs)
            if not msg_ids:
                return None if self._block(block) else []
        return self._control("abort_request", {"msg_ids": msg_ids}, targets,
                             self._block(block), "abort")

    # -- waiting ---------------------------------------------------------------------

    @property
    def outstanding(self) -> set[str]:
        """msg_ids of the requests sent that are not done yet."""
        self._outstanding = self._still_outstanding(self._outstanding)
        return set(self._outstanding)

    def _still_outstanding(self, msg_ids) -> set[str]:
        """Those of ``msg_ids`` sent and not done (forgotten or unknown ids are not)."""
        return set(self._core.outstanding(list(msg_ids)))

    def wait(self, jobs=None, timeout=-1) -> bool:
        """Wait for ``jobs`` for up to ``timeout`` seconds (forever if negative or None);
        True if they are all done, False on timeout.

        ``jobs``: a msg_id, an ``AsyncResult``, an int (an index into ``history``), any
        ``concurrent.futures.Future``, or a list of these; default: every request still
        outstanding.
        """
        if timeout is not None and timeout < 0:
            timeout = None
        others = _other_futures(jobs)
        if others:
            deadline = None if timeout is None else time.monotonic() + timeout
            if concurrent.futures.wait(others, timeout).not_done:
                return False
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if isinstance(jobs, concurrent.futures.Future):
                return True
            jobs = [j for j in jobs if not any(j is f for f in others)]
        if jobs is None:
            self._core.check_controller()
            msg_ids = list(self.outstanding)
        else:
            msg_ids = msg_ids_of(jobs, self.history)
        # As ipyparallel: ids this client never sent (or purged) have nothing to wait for.
        msg_ids = self._core.outstanding(msg_ids)
        return self._wait(msg_ids, timeout)

    def wait_interactive(self, jobs=None, interval=1.0, timeout=-1):
        """``wait`` with a progress line (``AsyncResult.wait_interactive``): for ``jobs``
        (as ``wait`` takes them), or every request still outstanding."""
        if jobs is None:
            msg_ids = list(self.outstanding)
        else:
            msg_ids = self._core.outstanding(msg_ids_of(jobs, self.history))
        if msg_ids:
            AsyncResult(self, msg_ids, fname="wait").wait_interactive(interval, timeout)

    # -- results (used by AsyncResult) -----------------------------------------------

    def _submit(self, channel, target_uuid, msg_type, content, metadata, buffers) -> str:
        if self._closed:
            raise RuntimeError("the client is closed")
        frames = [b if isinstance(b, bytes) else bytes(b) for b in buffers]
        msg_id = self._core.submit(channel, target_uuid, msg_type, json.dumps(content),
                                   json.dumps(metadata), frames)
        if msg_type in ("apply_request", "execute_request"):
            self.history.append(msg_id)
            self._track_outstanding([msg_id])
        return msg_id

    def _track_outstanding(self, msg_ids) -> None:
        self._outstanding.update(msg_ids)
        if len(self._outstanding) >= self._prune_outstanding_at:
            # Amortized: finished ids leave the set without anyone reading it.
            self._outstanding = self._still_outstanding(self._outstanding)
            self._prune_outstanding_at = max(1024, 2 * len(self._outstanding))

    def _submit_broadcast(self, targets, msg_type, content, metadata, buffers,
                          coalescing=False):
        """One request to every engine of ``targets`` through the broadcast scheduler:
        the engines' msg_ids; with ``coalescing``, ``(request msg_id, those)``, the one
        combined reply being filed under the request's."""
        if self._closed:
            raise RuntimeError("the client is closed")
        frames = [b if isinstance(b, bytes) else bytes(b) for b in buffers]
        request_id, msg_ids = self._core.submit_broadcast(
            targets, msg_type, json.dumps(content), json.dumps(metadata), frames, coalescing)
        if coalescing:
            self.history.append(request_id)
            self._track_outstanding([request_id])
            return request_id, msg_ids
        self.history.extend(msg_ids)
        self._track_outstanding(msg_ids)
        return msg_ids

    def _coalesced_results(self, request_id: str, n: int, targets=None) -> list:
        """The ``n`` engines' results in a coalesced broadcast's combined reply, in the
        order of ``targets`` (engine ids; the reply lists them in the order its
        ``broadcast_targets`` say, ipyparallel's scheduler order), or its error."""
        if request_id in self._results:
            return self._results[request_id]
        reply = self._core.reply(request_id)
        if reply is None:
            raise error.TimeoutError("result not ready")
        header, content = json.loads(reply.header), json.loads(reply.content)
        metadata = json.loads(reply.metadata)
        if content.get("status") != "ok":
            value, _ = decode_reply(request_id, header, content, metadata, reply.buffers,
                                    self._core.engine_id)
            values = [value]
        elif header.get("msg_type") != "apply_reply":
            values = [None] * n
        else:
            values, frames = [], list(reply.buffers)
            while frames:
                value, frames = deserialize_object(frames)
                values.append(value)
            if len(values) != n:
                # An engine's error reply has no buffers, and the combined reply keeps
                # only the last engine's status: which engine failed is not in it.
                values = [error.RemoteError(
                    "CoalescedReplyError",
                    f"{n - len(values)} of {n} engines failed in a coalesced broadcast, "
                    "whose one reply does not say which; use "
                    "broadcast_view(is_coalescing=False) to see each engine's error", "")]
            else:
                values = _in_target_order(values, metadata.get("broadcast_targets"), targets)
        self._results[request_id] = values
        return values

    def _wait(self, msg_ids, timeout=None) -> bool:
        return self._core.wait(list(msg_ids), timeout)

    def _wait_data(self, msg_ids, seen: int, timeout=None) -> tuple[int, bool]:
        return self._core.wait_data(list(msg_ids), seen, timeout)

    def _result(self, msg_id):
        """The decoded result of a ready task (a value, or a RemoteError instance)."""
        if msg_id in self._results:
            return self._results[msg_id]
        reply = self._core.reply(msg_id)
        if reply is None:
            raise error.TimeoutError("result not ready")
        if reply.status == "ok" and reply.msg_type == "apply_reply":
            # The common case needs no JSON: the value is in the buffers.
            value, _ = deserialize_object(reply.buffers)
            self._results[msg_id] = value
            return value
        header, content = json.loads(reply.header), json.loads(reply.content)
        value, _ = decode_reply(msg_id, header, content, json.loads(reply.metadata),
                                reply.buffers, self._core.engine_id)
        if header.get("msg_type") == "execute_reply" and content.get("status") == "ok":
            # The task is done, so its metadata (execute_result, outputs) is complete.
            value = ExecuteReply(msg_id, content, self._metadata(msg_id))
        self._results[msg_id] = value
        return value

    def _started(self, msg_id) -> bool:
        """Whether an engine has started running the task."""
        task = self._core.task(msg_id)
        return task is not None and task.started

    # One merge at a time: a reader thread (on_data, a DataView) and the caller taking
    # updates at once could otherwise merge older updates after newer ones, leaving
    # stale values in ``data`` for good.
    _data_lock = threading.Lock()

    def _take_data(self, msg_ids) -> list[dict]:
        """Merge pending published data into each task's dict; return the dicts."""
        with self._data_lock:
            pending = self._core.take_data(list(msg_ids))
            dicts = []
            for msg_id, updates in zip(msg_ids, pending):
                d = self._data.setdefault(msg_id, {})
                for frames in updates:
                    value, _ = deserialize_object(frames)
                    d.update(value)
                dicts.append(d)
            return dicts

    def _metadata(self, msg_id) -> dict:
        task = self._core.task(msg_id)
        foreign = task is None or task.foreign
        if foreign and msg_id in self._hub_md:
            # Another client's finished task: its record, as the controller has it.
            md = dict(self._hub_md[msg_id])
            md["data"] = self._hub_data.take([msg_id])[0]
            md["data_messages"] = task.data_received if task else 0
            return md
        md = {
            "msg_id": msg_id, "submitted": None, "started": None, "completed": None,
            "received": None, "engine_uuid": None, "engine_id": None, "status": None,
            "execute_input": None, "execute_result": None, "error": None,
            "stdout": "", "stderr": "", "outputs": [], "data": {}, "label": None,
            "data_messages": 0,
        }
        if task is None:
            return md
        uuid = task.engine
        md.update(engine_uuid=uuid, submitted=parse_date(task.submitted), stdout=task.stdout,
                  stderr=task.stderr, data_messages=task.data_received)
        if uuid:
            md["engine_id"] = self._core.engine_id(uuid)
        for out in json.loads(task.outputs):
            kind, content = out["msg_type"], out["content"]
            if kind == "display_data":
                md["outputs"].append(content)
            elif kind == "execute_input":
                md["execute_input"] = content.get("code")
            else:
                md[kind] = content
        md["data"] = (self._hub_data.take if foreign else self._take_data)([msg_id])[0]
        reply = self._core.reply(msg_id)
        if reply is not None:
            header, metadata = json.loads(reply.header), json.loads(reply.metadata)
            md["completed"] = parse_date(header.get("date"))
            md["started"] = parse_date(metadata.get("started"))
            md["status"] = metadata.get("status") or json.loads(reply.content).get("status")
            md["label"] = metadata.get("label")
        return md

    # -- lifecycle -------------------------------------------------------------------

    def close(self, linger=None):
        """Stop the I/O thread and close every socket."""
        if not self._closed:
            self._closed = True
            self._core.close()
        if getattr(self, "_tunnel", None) is not None:
            self._tunnel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        if self._closed:
            state = "closed"
        else:
            try:
                state = f"{len(self.ids)} engines"
            except error.ControllerLost:
                state = "controller lost"
        return f"<corral.Client {self.url_file!r} ({state})>"


class _Results(MutableMapping):
    """``Client.results``: finished results by msg_id, decoded on first read."""

    def __init__(self, client):
        self._client = client

    def _known(self) -> list[str]:
        c = self._client
        ready = [m for m in c.history if m not in c._results and c._core.ready(m)]
        return [m for m in [*c._results, *ready] if m not in c._owned]

    def __getitem__(self, msg_id):
        c = self._client
        if msg_id in c._owned:
            raise KeyError(msg_id)  # its AsyncResult has it (owner)
        if msg_id in c._results:
            return c._results[msg_id]
        if isinstance(msg_id, str) and c._is_local(msg_id) and c._core.ready(msg_id):
            return c._result(msg_id)
        raise KeyError(msg_id)

    def __setitem__(self, msg_id, value):
        self._client._results[msg_id] = value
        self._client._owned.discard(msg_id)

    def __delitem__(self, msg_id):
        c = self._client
        if msg_id not in self:
            raise KeyError(msg_id)
        c._results.pop(msg_id, None)
        c._core.forget([msg_id])

    def __contains__(self, msg_id):
        try:
            self[msg_id]
        except KeyError:
            return False
        return True

    def __iter__(self):
        return iter(self._known())

    def __len__(self):
        return len(self._known())

    def __repr__(self):
        return f"<Client.results: {len(self)} results>"


class _Metadata(Mapping):
    """``Client.metadata``: ipyparallel's metadata dict of each task this client sent, and
    of other clients' tasks whose records it fetched from the controller (``get_result``)."""

    def __init__(self, client):
        self._client = client

    def _known(self) -> list[str]:
        c = self._client
        ids = [m for m in c.history if c._core.task(m) is not None and m not in c._owned]
        seen = set(ids)
        return ids + [m for m in c._hub_md if m not in seen]

    def __getitem__(self, msg_id):
        if msg_id in self:
            return self._client._metadata(msg_id)
        raise KeyError(msg_id)

    def __contains__(self, msg_id):
        # Another client's task is here while its record fetched from the controller is
        # (an owner ``get_result`` takes it away, as ipyparallel's).
        c = self._client
        return msg_id in c._hub_md or (c._is_local(msg_id) and msg_id not in c._owned)

    def __iter__(self):
        return iter(self._known())

    def __len__(self):
        return len(self._known())

    def __repr__(self):
        return f"<Client.metadata: {len(self)} tasks>"
