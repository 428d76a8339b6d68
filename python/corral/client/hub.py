"""Queries to the controller's Hub (its query socket): one request/reply helper and the
queries the client exposes. Replies that arrive after their timeout are dropped by the core."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from corral import error

__all__ = ["Hub"]

DEFAULT_TIMEOUT = 10.0


def _json_date(value):
    """Datetimes in a query (``db_query({'submitted': {'$lt': dt}})``) as the ISO 8601
    strings the records hold, UTC with microseconds, so the Hub compares like with like."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class Hub:
    def __init__(self, core):
        self._core = core

    def request(self, msg_type: str, content: dict,
                timeout: float = DEFAULT_TIMEOUT) -> tuple[dict, list]:
        """The reply content (``status: ok``) and buffers; the Hub's error as a
        ``RemoteError``."""
        answer = self._core.hub_request(msg_type, json.dumps(content, default=_json_date),
                                        timeout)
        reply = json.loads(answer.content)
        if reply.get("status") != "ok":
            raise error.unwrap_exception(reply)
        return reply, answer.buffers

    def history(self) -> list[str]:
        return self.request("history_request", {})[0]["history"]

    def results(self, msg_ids: list[str], status_only: bool) -> tuple[dict, list]:
        """``result_request``: the content without ``status``, and the records' buffers
        (in the order of the sorted msg_ids)."""
        content, buffers = self.request(
            "result_request", {"msg_ids": sorted(msg_ids), "status_only": bool(status_only)})
        content.pop("status", None)
        return content, buffers

    def queue_status(self, engine_ids: list[int] | None, verbose: bool) -> dict:
        """``{id: counts, 'unassigned': n}`` with int engine ids."""
        reply = self.request("queue_request", {"targets": engine_ids, "verbose": verbose})[0]
        reply.pop("status", None)
        return {int(k) if k.isdigit() else k: v for k, v in reply.items()}

    def data(self, msg_ids: list[str], history: bool = False,
             buffers: bool = True) -> tuple[dict, list]:
        """corral's ``data_request`` (docs/PROTOCOL.md §12.2): ``{msg_id: [engine entry]}``
        and the updates' frames in the order the entries list them."""
        content, frames = self.request(
            "data_request",
            {"msg_ids": list(msg_ids), "history": bool(history), "buffers": bool(buffers)})
        return content["tasks"], frames

    def db_query(self, query: dict, keys: list[str] | None) -> tuple[dict, list]:
        """``db_request``: the reply content and its buffers."""
        return self.request("db_request", {"query": query, "keys": keys})

    def resubmit(self, msg_ids: list[str]) -> dict:
        """``resubmit_request``: ``{old msg_id: new msg_id}``."""
        return self.request("resubmit_request", {"msg_ids": list(msg_ids)})[0]["resubmitted"]

    def purge(self, msg_ids, engine_ids: list[int]) -> None:
        self.request("purge_request", {"engine_ids": engine_ids, "msg_ids": msg_ids})

    def shutdown(self) -> None:
        self.request("shutdown_request", {})
