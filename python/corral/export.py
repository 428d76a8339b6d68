"""`corral export MSG_ID --to FILE.npz`: a task's published history, as the controller
keeps it (every engine's bounded history and latest snapshot), in a file a scientist
opens with ``numpy.load`` alone, no corral needed.

Layout of the ``.npz`` (one row per update, oldest first):

- ``seq``, ``engine_id`` (-1 when unknown), ``engine_uuid``, ``published`` and
  ``received`` (``datetime64[us]``, UTC; NaT when unknown), ``keys`` (the keys each update
  carried, comma-separated);
- per published key ``K``: ``K`` the values stacked into one array when every update that
  carried ``K`` gave the same shape and dtype (then ``K.rows`` says which rows), else
  ``K.<row>`` one array per update. Values numpy cannot hold as arrays are stored pickled
  (``numpy.load(..., allow_pickle=True)`` reads them).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

#: The formats ``corral export`` writes, by file suffix.
FORMATS = (".npz",)


def history(client, msg_id: str) -> list[dict]:
    """The published updates the controller holds for `msg_id`, oldest first (see
    ``AsyncResult.data_history``)."""
    from corral.client.hubresult import data_history

    return data_history(client, [msg_id])[0]


def _datetime64(when) -> np.datetime64:
    if not isinstance(when, datetime):
        return np.datetime64("NaT", "us")
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return np.datetime64(when, "us")


def arrays(updates: list[dict]) -> dict[str, np.ndarray]:
    """The ``.npz`` arrays of `updates` (the layout in this module's doc)."""
    out: dict[str, np.ndarray] = {
        "seq": np.array([u["seq"] for u in updates], dtype=np.int64),
        "engine_id": np.array(
            [-1 if u.get("engine_id") is None else u["engine_id"] for u in updates], dtype=np.int64
        ),
        "engine_uuid": np.array([u.get("engine_uuid") or "" for u in updates], dtype=str),
        "published": np.array([_datetime64(u.get("published")) for u in updates], dtype="datetime64[us]"),
        "received": np.array([_datetime64(u.get("received")) for u in updates], dtype="datetime64[us]"),
        "keys": np.array([",".join(map(str, u["data"])) for u in updates], dtype=str),
    }
    by_key: dict[str, list[tuple[int, np.ndarray]]] = {}
    for row, u in enumerate(updates):
        for key, value in u["data"].items():
            name = str(key)
            if name in out or name.endswith(".rows") or "." in name:
                raise ValueError(
                    f"published key {name!r} clashes with the export's own names; "
                    "rename it to export this task"
                )
            by_key.setdefault(name, []).append((row, np.asarray(value)))
    for name, values in by_key.items():
        first = values[0][1]
        same = first.dtype != object and all(
            v.shape == first.shape and v.dtype == first.dtype for _, v in values
        )
        if same:
            out[name] = np.stack([v for _, v in values])
            out[f"{name}.rows"] = np.array([r for r, _ in values], dtype=np.int64)
        else:
            for row, v in values:
                out[f"{name}.{row}"] = v
    return out


def export(client, msg_id: str, path: str | Path) -> Path:
    """Writes `msg_id`'s published history to `path` (``.npz``); returns the path."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise ValueError(f"cannot export to {path.name!r}: name a file ending in {', '.join(FORMATS)}")
    from corral.error import RemoteError

    try:
        updates = history(client, msg_id)
    except RemoteError as e:
        if "No such message" not in str(e):
            raise
        updates = []
    if not updates:
        raise LookupError(
            f"the controller holds no published data for task {msg_id!r} "
            "(a wrong msg_id, a task that published nothing, or a record already purged)"
        )
    # A file object: numpy would otherwise append .npz to a name ending differently.
    with open(path, "wb") as f:
        np.savez(f, **arrays(updates))
    return path


USAGE = """usage: corral export MSG_ID --to FILE.npz [--profile NAME | --profile-dir DIR]
                     [--cluster-id ID | --url-file FILE]

Writes the published history the controller keeps for task MSG_ID (every engine's
updates, oldest first) to FILE, which numpy.load opens.
"""


def main(argv: list[str]) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="corral export", usage=USAGE)
    parser.add_argument("msg_id")
    parser.add_argument("--to", required=True, help="the file to write (.npz)")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--profile-dir", default=None)
    parser.add_argument("--cluster-id", default=None)
    parser.add_argument("--url-file", default=None, help="ipcontroller-client.json to connect with")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the controller")
    args = parser.parse_args(argv)

    import corral

    kwargs = {"timeout": args.timeout}
    if args.url_file:
        kwargs["url_file"] = args.url_file
    else:
        kwargs.update(profile=args.profile, profile_dir=args.profile_dir, cluster_id=args.cluster_id)
    try:
        client = corral.Client(**kwargs)
    except Exception as e:  # noqa: BLE001 - the user is told what failed and how to point us
        print(f"corral export: cannot reach the controller ({e}); "
              "name it with --profile-dir/--cluster-id or --url-file", file=sys.stderr)
        return 1
    try:
        path = export(client, args.msg_id, args.to)
    except (ValueError, LookupError, RuntimeError) as e:
        print(f"corral export: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"wrote {path}")
    return 0
