"""JSON for message content, encoding what `json` cannot as Jupyter's session does:
binary data (images, PDF) as base64 text, dates in ISO 8601, anything else by `str`."""

from __future__ import annotations

import base64
import json
from datetime import date, datetime
from typing import Any


def _default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    return str(obj)


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=_default)
