"""Which engines are stock ipyparallel engines, asked once per engine.

Functions that must run in an engine's namespace are written differently for stock engines
(see ``corral.serialize.stock_canning``), so the client must know, before it sends one,
what the engines are. Nothing at registration says so (an engine registers with its uuid
only, and the controller tells clients only ids and uuids), but every engine answers a
``kernel_info_request`` on its control channel, at once even while a task runs: corral's
with ``implementation: "corral"``, a stock ``ipengine`` (an ipykernel) with ``"ipython"``.
The answer is kept per engine uuid, so each engine is asked once.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger("corral.client")

__all__ = ["EngineKinds"]

#: How long to wait for engines' kernel_info replies; an engine that does not answer in
#: time is taken for a corral engine (the client's own format) and not asked again.
KERNEL_INFO_TIMEOUT = 10.0


class EngineKinds:
    def __init__(self, core):
        self._core = core
        #: uuid -> True (stock), False (corral), None (did not answer: taken for corral).
        self._stock: dict[str, bool | None] = {}

    def any_stock(self, uuids) -> bool:
        """Whether any of the engines ``uuids`` is a stock engine (asking those not yet
        asked)."""
        unknown = [u for u in dict.fromkeys(uuids) if u not in self._stock]
        if unknown:
            self._ask(unknown)
        return any(self._stock.get(u) for u in uuids)

    def _ask(self, uuids) -> None:
        asked = {self._core.submit("control", uuid, "kernel_info_request", "{}", "{}", []): uuid
                 for uuid in uuids}
        self._core.wait(list(asked), KERNEL_INFO_TIMEOUT)
        for msg_id, uuid in asked.items():
            reply = self._core.reply(msg_id)
            if reply is None:
                log.warning("engine %s did not answer kernel_info_request within %s s: "
                            "taken for a corral engine", uuid, KERNEL_INFO_TIMEOUT)
                self._stock[uuid] = None
                continue
            implementation = json.loads(reply.content).get("implementation")
            self._stock[uuid] = implementation != "corral"
        self._core.forget(list(asked))
