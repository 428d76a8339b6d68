"""Results, output and published data of tasks this client did not send (another client's,
or its own from before a reconnect), read through the controller.

``AsyncHubResult`` is ipyparallel's name: an ``AsyncResult`` whose results come from the
controller's ``result_request`` when the local store does not hold them (its wait polls
the controller, as ipyparallel's does). Published data is corral's: the first read takes
the controller's snapshot (``data_request``, docs/PROTOCOL.md §12), and from then on the
client files the task's IOPub itself, so ``ar.data`` goes on updating live while the
task runs.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from corral import error
from corral.client.asyncresult import AsyncResult
from corral.client.replies import parse_date
from corral.serialize import deserialize_object

__all__ = ["AsyncHubResult", "HubData", "data_meta"]

#: How often a wait on another client's task asks the controller (as ipyparallel: 0.1 s).
POLL_INTERVAL = 0.1


def _split(frames: list, n: int) -> tuple[list, list]:
    return frames[:n], frames[n:]


def _merge_updates(updates: list[dict], frames: list) -> tuple[dict, list]:
    """The dict the updates make, merged oldest first (``dict.update``), and the frames
    left after theirs."""
    merged: dict = {}
    for update in updates:
        mine, frames = _split(frames, update["nbuffers"])
        value, _ = deserialize_object(mine)
        merged.update(value)
    return merged, frames


class HubData:
    """Published data of tasks read through the controller, per client: the first read of
    a msg_id takes the controller's snapshot and starts following its IOPub; later reads
    merge only what arrived since."""

    def __init__(self, client):
        self._client = client
        #: msg_id -> newest ``published`` date the snapshot held (skip older IOPub).
        self._snapshot_date: dict[str, str] = {}

    def followed(self, msg_id: str) -> bool:
        return msg_id in self._snapshot_date

    def forget(self, msg_ids) -> None:
        for m in msg_ids:
            self._snapshot_date.pop(m, None)

    def take(self, msg_ids: list[str]) -> list[dict]:
        """The merged data of each msg_id (followed from now on)."""
        client = self._client
        new = [m for m in msg_ids if m not in self._snapshot_date]
        if new:
            # Follow first, then read the snapshot: an update published in between is in
            # both, and the date check below skips the copy the snapshot holds.
            client._core.follow(new)
            try:
                tasks, frames = client._hub.data(new)
            except error.RemoteError:
                # Unknown to the controller (purged), or a stock controller that keeps no
                # published data: what arrives live from now on is all there is.
                tasks, frames = {}, []
            for m in new:
                merged: dict = {}
                newest = ""
                for entry in tasks.get(m, []):
                    part, frames = _merge_updates(entry["updates"], frames)
                    merged.update(part)
                    newest = max(newest, entry.get("published") or "")
                client._data[m] = merged
                self._snapshot_date[m] = newest
        dicts = []
        for m, updates in zip(msg_ids, client._core.take_data_dated(list(msg_ids))):
            d = client._data.setdefault(m, {})
            for published, frames in updates:
                if published and published <= self._snapshot_date.get(m, ""):
                    continue  # the snapshot has it already (or newer)
                value, _ = deserialize_object(frames)
                d.update(value)
            dicts.append(d)
        return dicts


def data_history(client, msg_ids: list[str]) -> list[list[dict]]:
    """Per msg_id, the updates the controller still holds (its bounded history and the
    latest snapshot), oldest first, each ``{seq, engine_id, engine_uuid, published,
    received, data}`` with ``data`` the dict that update published."""
    try:
        tasks, frames = client._hub.data(msg_ids, history=True)
    except error.RemoteError as e:
        if "data_request" in str(e):
            raise RuntimeError(
                "this controller keeps no published data (a stock ipyparallel controller?): "
                "data_history needs corral's controller (`corral controller`)") from None
        raise
    out = []
    for m in msg_ids:
        entries = []
        for entry in tasks.get(m, []):
            decoded = {}
            for update in entry["updates"] + entry["history"]:
                mine, frames = _split(frames, update["nbuffers"])
                decoded[update["seq"]] = (update, deserialize_object(mine)[0])
            for seq in sorted(decoded):
                update, value = decoded[seq]
                entries.append({
                    "seq": seq, "engine_id": entry.get("engine_id"),
                    "engine_uuid": entry.get("engine_uuid"),
                    "published": parse_date(update.get("published")),
                    "received": parse_date(update.get("received")), "data": value,
                })
        entries.sort(key=lambda e: (e["published"] is None, e["published"] or 0, e["seq"]))
        out.append(entries)
    return out


def _age(date) -> float | None:
    if not isinstance(date, datetime):
        return None
    if date.tzinfo is None:
        date = date.replace(tzinfo=timezone.utc)
    return max(0.0, (datetime.now(timezone.utc) - date).total_seconds())


def data_meta(client, msg_ids: list[str]) -> list[dict]:
    """Per msg_id: the engine that published last (``engine_id``, ``engine_uuid``), the
    sequence number (``seq``), time (``published``, engine clock) and ``age`` in seconds of
    its latest snapshot, whether that engine is ``alive`` (else ``died``, ``died_ago``), and
    counters: ``published_updates`` (updates the controller recorded), ``received_updates``
    (updates that reached this client) and ``conflated_updates`` (of those, replaced by a
    later one before anyone read them). ``None`` where not known: a stock controller keeps
    no published data. ``engines`` lists every engine when several published (a retried
    task)."""
    try:
        tasks, _ = client._hub.data(msg_ids, buffers=False)
    except (error.RemoteError, TimeoutError):
        tasks = {}
    out = []
    for m in msg_ids:
        task = client._core.task(m)
        entries = [_engine_meta(e) for e in tasks.get(m, [])]
        if entries:
            md = dict(entries[-1])
        else:
            md = {"engine_id": None, "engine_uuid": task.engine if task else None,
                  "seq": None, "published": None, "recorded": None, "age": None,
                  "alive": None, "died": None, "died_ago": None, "incomplete": False}
        if md["engine_id"] is None and md["engine_uuid"]:
            md["engine_id"] = client._core.engine_id(md["engine_uuid"])
        if md["alive"] is None and md["engine_id"] is not None:
            md["alive"] = md["engine_id"] in client.ids
        md["published_updates"] = md["seq"]
        md["received_updates"] = task.data_received if task else None
        md["conflated_updates"] = task.data_conflated if task else None
        if len(entries) > 1:
            md["engines"] = entries
        out.append(md)
    return out


def _engine_meta(entry: dict) -> dict:
    published = parse_date(entry.get("published"))
    died = parse_date(entry.get("engine_died"))
    return {
        "engine_id": entry.get("engine_id"), "engine_uuid": entry.get("engine_uuid"),
        "seq": entry.get("seq"), "published": published,
        "recorded": parse_date(entry.get("received")), "age": _age(published),
        "alive": entry.get("engine_alive"), "died": died, "died_ago": _age(died),
        "incomplete": entry.get("incomplete", False),
    }


def record_metadata(client, msg_id: str, record: dict) -> dict:
    """ipyparallel's metadata of a task from the controller's ``result_request`` record."""
    header = record.get("header") or {}
    result_header = record.get("result_header") or {}
    result_md = record.get("result_metadata") or {}
    content = record.get("result_content") or {}
    if isinstance(content, str):
        content = json.loads(content)
    io = record.get("io") or {}
    uuid = result_md.get("engine")
    return {
        "msg_id": msg_id, "submitted": parse_date(header.get("date")),
        "started": parse_date(result_md.get("started")),
        "completed": parse_date(result_header.get("date")),
        "received": parse_date(record.get("received")), "engine_uuid": uuid,
        "engine_id": client._core.engine_id(uuid) if uuid else None,
        "status": result_md.get("status") or content.get("status"),
        "execute_input": io.get("execute_input"), "execute_result": io.get("execute_result"),
        "error": io.get("error"), "stdout": io.get("stdout") or "",
        "stderr": io.get("stderr") or "", "outputs": [], "data": {},
        "label": (record.get("metadata") or {}).get("label"), "data_messages": 0,
    }


class AsyncHubResult(AsyncResult):
    """An ``AsyncResult`` for tasks that may not be this client's: results this client
    holds come from its store, the others from the controller (``wait`` polls it every
    0.1 s, as ipyparallel's does). ``data`` of another client's task starts from the
    controller's snapshot and then follows the task live."""

    def __init__(self, client, msg_ids, single=False, fname="get_result", owner=True):
        # ``owner``: the results fetched from the controller are kept here and the
        # client's caches let go of them (ipyparallel's; see ``AsyncResult``).
        super().__init__(client, msg_ids, single=single, fname=fname, owner=owner)

    def _remote_ids(self) -> list[str]:
        client = self._client
        return [m for m in self.msg_ids if not client._is_local(m)]

    def wait(self, timeout=-1, return_when=None):
        if return_when is not None:
            return super().wait(timeout, return_when)
        if self._resolved:
            return True
        if timeout is not None and timeout < 0:
            timeout = None
        deadline = None if timeout is None else time.monotonic() + timeout
        client = self._client
        local = [m for m in self.msg_ids if client._is_local(m)]
        try:
            if local and not client._wait(local, timeout):
                return False
            remote = [m for m in self._remote_ids() if m not in client._results]
            while remote:
                pending = set(client._hub.results(remote, status_only=True)[0]["pending"])
                if not pending:
                    client._fetch_hub_results(remote)
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                time.sleep(POLL_INTERVAL if left is None else min(POLL_INTERVAL, left))
        except error.ControllerLost as e:
            self._settle(None, e, resolved=False)
            raise
        self._resolve()
        return True

    def _watch(self):
        """Nothing signals a hub result's completion: a callback waits in a thread that
        polls the controller."""
        import threading

        if self._settled or self.cancelled():
            return

        def poll():
            try:
                self.wait()
            except Exception:
                pass  # settled with the error where there is one

        threading.Thread(target=poll, name=f"corral-hub-result-{self.msg_ids[0]}",
                         daemon=True).start()

    @property
    def data(self):
        return self._per_task(self._client._read_data(self.msg_ids))

    def __repr__(self):
        state = "finished" if self._resolved else "pending"
        return f"<AsyncHubResult({self._fname}): {state}>"
