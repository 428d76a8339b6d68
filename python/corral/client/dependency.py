"""Task dependencies for load-balanced views (ipyparallel's ``Dependency``): a task can wait
for others to finish (``after``: run once they are done, anywhere) or run where they ran
(``follow``: on the same engine). The controller's scheduler enforces them; this module only
puts them in the form the wire carries (a list of msg_ids, or the dict form with flags)."""

from __future__ import annotations

__all__ = ["Dependency", "render_dependency"]


def _msg_ids(deps) -> list[str]:
    """msg_ids from a msg_id, an ``AsyncResult``, or an iterable of either."""
    from corral.client.asyncresult import AsyncResult

    if deps is None:
        return []
    if isinstance(deps, str):
        return [deps]
    if isinstance(deps, AsyncResult):
        return list(deps.msg_ids)
    ids: list[str] = []
    for dep in deps:
        if isinstance(dep, str):
            ids.append(dep)
        elif isinstance(dep, AsyncResult):
            ids.extend(dep.msg_ids)
        else:
            raise TypeError(f"a dependency is a msg_id or an AsyncResult, not {dep!r}")
    return ids


class Dependency(set):
    """A set of msg_ids with how they must have ended.

    ``all``: every one (True) or any one (False) must be met. ``success``/``failure``:
    whether a successful or a failed task meets it (default: success only).
    """

    def __init__(self, dependencies=(), all=True, success=True, failure=False):
        super().__init__(_msg_ids(dependencies))
        self.all = all
        if not (success or failure):
            raise ValueError("Must depend on at least one of success or failure!")
        self.success = success
        self.failure = failure

    def as_dict(self) -> dict:
        return {"dependencies": sorted(self), "all": self.all, "success": self.success,
                "failure": self.failure}

    def __repr__(self):
        return (f"Dependency({sorted(self)!r}, all={self.all}, success={self.success}, "
                f"failure={self.failure})")


def render_dependency(dep):
    """The wire form of ``after``/``follow``: the dict form for a ``Dependency``,
    a list of msg_ids otherwise."""
    if isinstance(dep, Dependency):
        return dep.as_dict()
    return _msg_ids(dep)
