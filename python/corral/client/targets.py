"""What a ``targets`` argument names, the same way everywhere (views, control requests,
queue status, shutdown)."""

from __future__ import annotations

__all__ = ["resolve_targets"]


def resolve_targets(targets, live_ids) -> tuple[list[int], bool]:
    """The engine ids ``targets`` names, and whether results are single values.

    ``None`` or ``"all"``: every live engine (``live_ids()``, called only then); an int: that
    engine, with single results; any other iterable: those engines. A negative int counts
    from the end of the live engines, as in ipyparallel (``rc[-1]`` is the last one).
    """
    if targets is None or (isinstance(targets, str) and targets == "all"):
        return list(live_ids()), False
    if isinstance(targets, int):
        return [_from_end(targets, live_ids) if targets < 0 else targets], True
    return [_from_end(t, live_ids) if isinstance(t, int) and t < 0 else t
            for t in targets], False


def _from_end(index: int, live_ids) -> int:
    ids = sorted(live_ids())
    if -index > len(ids):
        raise IndexError(f"No such engine: {index}; live engines are {ids}")
    return ids[index]
