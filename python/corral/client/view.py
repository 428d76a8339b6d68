"""Views: where requests go. ``DirectView`` addresses engines by id through the MUX;
``LoadBalancedView`` lets the task scheduler pick an engine.
"""

from __future__ import annotations

from corral import error
from corral.client.asyncresult import AsyncResult
from corral.serialize import pack_apply_message

__all__ = ["DirectView", "LoadBalancedView", "View"]


class View:
    """Common parts: ``block`` (default False, as in ipyparallel) and the apply family."""

    def __init__(self, client, targets=None, block=False):
        self.client = client
        self.targets = targets
        self.block = block

    def apply(self, f, *args, **kwargs):
        """Call ``f(*args, **kwargs)`` remotely; blocks (returns the result) if ``self.block``."""
        return self._apply(f, args, kwargs, self.block)

    def apply_async(self, f, *args, **kwargs) -> AsyncResult:
        return self._apply(f, args, kwargs, False)

    def apply_sync(self, f, *args, **kwargs):
        return self._apply(f, args, kwargs, True)

    def _apply(self, f, args, kwargs, block):
        raise NotImplementedError

    @staticmethod
    def _finish(ar: AsyncResult, block: bool):
        return ar.get() if block else ar

    def __repr__(self):
        return f"<{type(self).__name__} {self.targets!r}>"


class DirectView(View):
    """Requests to specific engines. An int target gives single results; a list (or
    ``"all"``, resolved at each call) gives lists, one entry per engine."""

    def __init__(self, client, targets="all", block=False):
        super().__init__(client, targets, block)

    def _targets(self) -> tuple[list[tuple[int, str]], bool]:
        """``[(engine_id, uuid)]`` and whether results are single values."""
        if self.targets in (None, "all"):
            ids, single = self.client.ids, False
        elif isinstance(self.targets, int):
            ids, single = [self.targets], True
        else:
            ids, single = list(self.targets), False
        if not ids:
            raise error.NoEnginesRegistered()
        return [(i, self.client._uuid(i)) for i in ids], single

    def _apply(self, f, args, kwargs, block):
        targets, single = self._targets()
        buffers = pack_apply_message(f, args, kwargs)
        msg_ids = [
            self.client._submit("mux", uuid, "apply_request", {}, {"label": None}, buffers)
            for _, uuid in targets
        ]
        name = getattr(f, "__name__", "f")
        ar = AsyncResult(self.client, msg_ids, single=single, fname=name,
                         targets=[i for i, _ in targets])
        return self._finish(ar, block)

    def execute(self, code, silent=True, targets=None, block=None):
        """Run ``code`` (a string) in each engine's namespace."""
        targets_, single = self._targets()
        content = {"code": code, "silent": bool(silent), "user_expressions": {}}
        msg_ids = [
            self.client._submit("mux", uuid, "execute_request", content, {"label": None}, [])
            for _, uuid in targets_
        ]
        ar = AsyncResult(self.client, msg_ids, single=single, fname="execute",
                         targets=[i for i, _ in targets_])
        return self._finish(ar, self.block if block is None else block)


class LoadBalancedView(View):
    """Each call becomes one task that the scheduler sends to a free engine."""

    def __init__(self, client, targets=None, block=False, retries=0, timeout=0.0):
        super().__init__(client, targets, block)
        self.retries = retries
        self.timeout = timeout

    def _apply(self, f, args, kwargs, block):
        if not self.client.ids:
            raise error.NoEnginesRegistered()
        if self.targets is None:
            uuids = []
        else:
            ids = [self.targets] if isinstance(self.targets, int) else list(self.targets)
            uuids = [self.client._uuid(i) for i in ids]
        metadata = {
            "after": [], "follow": [], "timeout": float(self.timeout or 0.0),
            "targets": uuids, "retries": int(self.retries), "label": None,
        }
        buffers = pack_apply_message(f, args, kwargs)
        msg_id = self.client._submit("task", None, "apply_request", {}, metadata, buffers)
        ar = AsyncResult(self.client, [msg_id], single=True,
                         fname=getattr(f, "__name__", "f"))
        return self._finish(ar, block)
