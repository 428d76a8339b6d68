"""A small JSON summary of published values, for the controller's web dashboard.

The controller is pure Rust and never unpickles, so each `data_message` also carries
`content["corral_preview"]` (docs/PROTOCOL.md §13): one entry per key, cheap to build
however big the value, because the engine builds one on every `publish_data`:

- numbers and bools: `{"type": "number", "value": x}` (non-finite floats as strings);
- strings: `{"type": "str", "value": the first 200 characters}`;
- numpy arrays: shape, dtype and, for 1-D/2-D numeric arrays, a strided preview of at
  most 256 points or 32x32 cells; min/max only for arrays small enough to scan cheaply;
- anything else: `{"type": "other", "class": its type's name}`.

Stock clients ignore the field.
"""

from __future__ import annotations

import json
import math
import numbers
import sys
from typing import Any

#: Points of a 1-D preview, and cells per side of a 2-D one.
MAX_POINTS_1D = 256
MAX_SIDE_2D = 32
#: Arrays up to this many elements also get min/max (a full scan, ~µs at this size).
REDUCE_LIMIT = 1 << 16
MAX_STR = 200


def _number(x: Any) -> Any:
    x = x.item() if hasattr(x, "item") else x
    if isinstance(x, bool):
        return x
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real):
        x = float(x)
        return x if math.isfinite(x) else repr(x)
    return str(x)


def _array(a: Any) -> dict:
    np = sys.modules["numpy"]
    out: dict[str, Any] = {"type": "ndarray", "shape": list(a.shape), "dtype": str(a.dtype)}
    numeric = a.dtype.kind in "biuf"
    if not numeric or a.size == 0 or a.ndim not in (1, 2):
        return out
    if a.ndim == 1:
        step = max(1, -(-a.shape[0] // MAX_POINTS_1D))
        sample = a[::step]
    else:
        rows = max(1, -(-a.shape[0] // MAX_SIDE_2D))
        cols = max(1, -(-a.shape[1] // MAX_SIDE_2D))
        step = [rows, cols]
        sample = a[::rows, ::cols]
    out["stride"] = step
    sample = np.asarray(sample, dtype=float)
    out["preview"] = [_clean(v) for v in sample.tolist()]
    if a.size <= REDUCE_LIMIT:
        with np.errstate(invalid="ignore"):
            out["min"] = _number(np.nanmin(a)) if a.dtype.kind == "f" else _number(a.min())
            out["max"] = _number(np.nanmax(a)) if a.dtype.kind == "f" else _number(a.max())
    return out


def _clean(v: Any) -> Any:
    """JSON has no NaN or infinity: those become null."""
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v if math.isfinite(v) else None


def summarize(value: Any) -> dict:
    """The preview entry of one published value."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray):
        return _array(value)
    if isinstance(value, (bool, numbers.Number)) and not isinstance(value, complex):
        return {"type": "number", "value": _number(value)}
    if isinstance(value, str):
        return {"type": "str", "value": value[:MAX_STR]}
    return {"type": "other", "class": type(value).__name__}


def preview_json(data: dict) -> str | None:
    """`data`'s summary as JSON text, or None if summarizing failed (publishing must not)."""
    try:
        return json.dumps({str(k): summarize(v) for k, v in data.items()})
    except Exception:  # noqa: BLE001 - a preview is optional; the data still goes out
        return None
