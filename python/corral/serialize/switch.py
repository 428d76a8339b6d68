"""Which pickler sends functions, and whose globals they run with: ipyparallel's
``use_pickle()`` / ``use_cloudpickle()`` / ``use_dill()``, process-wide as there.

* ``pickle`` (the default): objects are pickled with cloudpickle (so functions defined in a
  notebook travel by value) and an engine runs such a function in its user namespace,
  engine names first — what ipyparallel's default canning gives.
* ``cloudpickle``: the same pickler, but a function keeps the globals it brought from the
  client (client values win, names defined only on the engine are not seen), as with
  ipyparallel's ``use_cloudpickle()``.
* ``dill``: dill pickles everything (it handles some objects cloudpickle does not), with
  the globals semantics of ``cloudpickle``.

A view's ``use_*`` method switches the client and its engines; an engine also follows the
switch when a stock ipyparallel client applies ``ipyparallel.serialize.use_*`` to it.
"""

from __future__ import annotations

import cloudpickle

__all__ = [
    "current_dumps",
    "follow_stock_switch",
    "functions_use_engine_namespace",
    "serializer",
    "use_cloudpickle",
    "use_dill",
    "use_pickle",
]

_state = {"name": "pickle", "dumps": cloudpickle.dumps}


def serializer() -> str:
    """``'pickle'``, ``'cloudpickle'`` or ``'dill'``."""
    return _state["name"]


def current_dumps():
    """The ``dumps(obj, protocol=, buffer_callback=)`` that ``serialize_object`` uses."""
    return _state["dumps"]


def functions_use_engine_namespace() -> bool:
    """Whether a function sent by value runs with the engine's namespace as globals."""
    return _state["name"] == "pickle"


def use_pickle() -> None:
    """Back to the default: cloudpickle, functions run in the engine's namespace."""
    _state.update(name="pickle", dumps=cloudpickle.dumps)


def use_cloudpickle() -> None:
    """Functions keep the globals they were sent with (client values win)."""
    _state.update(name="cloudpickle", dumps=cloudpickle.dumps)


def use_dill() -> None:
    """Pickle with dill (closures, interactively defined classes, ...)."""
    try:
        import dill
    except ImportError:
        raise ImportError(
            "use_dill() needs the dill package here and on the engines: pip install dill"
        ) from None
    _state.update(name="dill", dumps=dill.dumps)


#: ipyparallel's switches, as a stock client sends them to an engine.
_STOCK_MODULE = "ipyparallel.serialize.canning"
_STOCK_SWITCHES = {"use_pickle": use_pickle, "use_cloudpickle": use_cloudpickle,
                   "use_dill": use_dill}


def follow_stock_switch(f):
    """corral's switch in place of ipyparallel's same-named one (which would only change
    the state of an ipyparallel module nothing on a corral engine reads); else ``f``."""
    if getattr(f, "__module__", None) == _STOCK_MODULE:
        return _STOCK_SWITCHES.get(getattr(f, "__name__", None), f)
    return f
