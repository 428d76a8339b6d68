"""What a ``targets`` argument names, the same way everywhere (views, control requests,
queue status, shutdown)."""

from __future__ import annotations

__all__ = ["resolve_targets"]


def resolve_targets(targets, live_ids) -> tuple[list[int], bool]:
    """The engine ids ``targets`` names, and whether results are single values.

    ``None`` or ``"all"``: every live engine (``live_ids()``, called only then); an int: that
    engine, with single results; any other iterable: those engines.
    """
    if targets is None or (isinstance(targets, str) and targets == "all"):
        return list(live_ids()), False
    if isinstance(targets, int):
        return [targets], True
    return list(targets), False
