"""Turning a reply into what ``get()`` returns: one ``decode_reply`` for a task's own reply
and for a controller record of someone else's task, so both decode alike."""

from __future__ import annotations

from datetime import datetime

from corral import error
from corral.serialize import deserialize_object

__all__ = ["decode_reply", "parse_date"]


def parse_date(value):
    """An ISO 8601 date from a header or metadata as an aware ``datetime`` (as ipyparallel's
    metadata has them); other values unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value


def _engine_info(content: dict, engine_id, uuid, method) -> dict:
    info = dict(content.get("engine_info") or {})
    info.setdefault("engine_id", engine_id)
    info.setdefault("engine_uuid", uuid)
    info.setdefault("method", method)
    return info


def decode_reply(msg_id: str, header: dict, content: dict, metadata: dict, buffers: list,
                 engine_id_of) -> tuple[object, list]:
    """The value of a reply (or the ``RemoteError``/``TaskAborted`` it carries), and the
    buffers it did not use. ``engine_id_of(uuid)`` names the engine in errors."""
    status = content.get("status")
    if status == "ok":
        # Only apply replies carry a value; execute and control replies have none.
        if header.get("msg_type") == "apply_reply":
            return deserialize_object(buffers)
        return None, buffers
    if status == "aborted":
        return error.TaskAborted(f"task {msg_id} was aborted"), buffers
    uuid = metadata.get("engine")
    method = "execute" if header.get("msg_type") == "execute_reply" else "apply"
    content = dict(content)
    content["engine_info"] = _engine_info(content, engine_id_of(uuid) if uuid else None, uuid,
                                          method)
    return error.unwrap_exception(content), buffers
