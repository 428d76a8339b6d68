"""Dependencies, as ipyparallel has them.

* On other tasks, for load-balanced views: a task can wait for others to finish (``after``:
  run once they are done, anywhere) or run where they ran (``follow``: on the same engine).
  The controller's scheduler enforces them; ``Dependency`` and ``render_dependency`` only
  put them in the form the wire carries (a list of msg_ids, or the dict form with flags).
* On the engine itself: ``@require("numpy")`` imports modules (and binds objects) in the
  engine's namespace before the function runs, and ``@depend(check, ...)`` runs a check
  first. When the check fails the engine answers ``UnmetDependency`` and the task
  scheduler tries another engine (a task no engine can run fails with
  ``ImpossibleDependency``).
* ``@interactive`` and ``Reference(name)``: a function that runs in the engine's namespace,
  and an argument that is a name there.
"""

from __future__ import annotations

import sys
import types

from corral.error import UnmetDependency

__all__ = ["Dependency", "Reference", "depend", "dependent", "interactive",
           "render_dependency", "require"]


def _msg_ids(deps) -> list[str]:
    """msg_ids from a msg_id, an ``AsyncResult``, or an iterable of either."""
    from corral.client.asyncresult import msg_ids_of

    return [] if deps is None else msg_ids_of(deps)


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

    def _meeting(self, completed, failed) -> set:
        """The msg_ids whose ending counts toward this dependency."""
        meeting = set(completed) if self.success else set()
        if self.failure and failed is not None:
            meeting |= set(failed)
        return meeting

    def check(self, completed, failed=None) -> bool:
        """Whether the dependency is met, given the msg_ids that succeeded and failed."""
        if not self:
            return True
        meeting = self._meeting(completed, failed)
        return self <= meeting if self.all else bool(self & meeting)

    def unreachable(self, completed, failed=None) -> bool:
        """Whether the dependency can no longer be met, given what has ended."""
        if not self:
            return False
        ended = set(completed) | set(failed or ())
        missed = (ended - self._meeting(completed, failed)) & self
        return bool(missed) if self.all else missed == set(self)

    def __repr__(self):
        return (f"Dependency({sorted(self)!r}, all={self.all}, success={self.success}, "
                f"failure={self.failure})")


def render_dependency(dep):
    """The wire form of ``after``/``follow``: the dict form for a ``Dependency``,
    a list of msg_ids otherwise."""
    if isinstance(dep, Dependency):
        return dep.as_dict()
    return _msg_ids(dep)


def interactive(f):
    """Marks ``f`` to run in the engine's namespace (its globals are the engine's names):
    it is sent by value, as a function defined in a notebook is. As in ipyparallel, ``f``
    becomes a copy whose globals are this process's ``__main__`` (what a notebook's own
    functions have), so ``use_cloudpickle()`` sends ``__main__``'s values along."""
    if isinstance(f, types.FunctionType):
        main = sys.modules["__main__"].__dict__
        g = types.FunctionType(f.__code__, main, f.__name__, f.__defaults__, f.__closure__)
        g.__kwdefaults__ = f.__kwdefaults__
        g.__qualname__ = f.__qualname__
        g.__doc__ = f.__doc__
        g.__dict__.update(f.__dict__)
        f = g
    f.__module__ = "__main__"
    return f


class Reference:
    """An argument that stands for the value of ``name`` in the engine's namespace when the
    function runs there: ``view.apply(f, Reference("x"))`` calls ``f(x)`` with the engine's
    ``x``. (Understood by corral engines, in top-level positional and keyword arguments.)"""

    def __init__(self, name: str):
        if not isinstance(name, str):
            raise TypeError(f"a Reference names a variable (a str), not {name!r}")
        self.name = name

    def resolve(self, namespace: dict):
        return eval(self.name, namespace)

    def __reduce__(self):
        # Sent as ipyparallel's own Reference, which stock and corral engines resolve.
        from corral.serialize.canned_writer import canned_reference

        return canned_reference(self.name).__reduce__()

    def __repr__(self):
        return f"<Reference {self.name!r}>"


class dependent:
    """``f`` guarded by a check: calling it first calls ``df(*dargs, **dkwargs)``, and a
    result of ``False`` raises ``UnmetDependency`` instead of running ``f``."""

    def __init__(self, _wrapped_f, _wrapped_df, *dargs, **dkwargs):
        self.f = _wrapped_f
        self.__name__ = getattr(_wrapped_f, "__name__", "f")
        self.df = _wrapped_df
        self.dargs = dargs
        self.dkwargs = dkwargs

    def __call__(self, *args, **kwargs):
        if self.df(*self.dargs, **self.dkwargs) is False:
            raise UnmetDependency(f"{getattr(self.df, '__name__', 'check')} failed on this engine")
        return self.f(*args, **kwargs)


class depend:
    """Decorator: ``@depend(check, *args, **kwargs)`` runs ``check(*args, **kwargs)`` on the
    engine before the function; ``False`` means this engine cannot run it."""

    def __init__(self, _wrapped_f, *args, **kwargs):
        self.f = _wrapped_f
        self.args = args
        self.kwargs = kwargs

    def __call__(self, f):
        return dependent(f, self.f, *self.args, **self.kwargs)


def _require(*modules, **objects):
    """The check behind ``require``: imports into the engine's namespace (``__main__``)."""
    namespace = sys.modules["__main__"].__dict__
    for name in modules:
        try:
            exec(f"import {name}", namespace)
        except ImportError as e:
            raise UnmetDependency(f"cannot import {name}: {e}") from None
    namespace.update(objects)
    return True


def require(*objects, **mapping):
    """Decorator: modules (by name or module object) are imported in the engine's
    namespace, and other named objects bound there, before the function runs. An engine
    that cannot import them answers ``UnmetDependency``, so a load-balanced task moves on."""
    names = []
    for obj in objects:
        if isinstance(obj, types.ModuleType):
            obj = obj.__name__
        if isinstance(obj, str):
            names.append(obj)
        elif hasattr(obj, "__name__"):
            mapping[obj.__name__] = obj
        else:
            raise TypeError(f"Objects other than modules and functions must be passed by "
                            f"kwarg, but got: {type(obj).__name__}")
    return depend(_require, *names, **mapping)
