"""corral: interactive parallel computing with a Rust core, speaking ipyparallel's protocol.

``import corral as ipp`` works like ``import ipyparallel as ipp`` for the client API.
"""

from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION

from corral._core import __version__
from corral import error, util
from corral.client import (
    AsyncHubResult,
    AsyncMapResult,
    AsyncResult,
    BroadcastView,
    Client,
    DirectView,
    LoadBalancedView,
)
from corral.client.decorators import parallel, remote
from corral.client.executor import ViewExecutor
from corral.dependency import (
    Dependency,
    Reference,
    depend,
    dependent,
    interactive,
    require,
)
from corral.cluster import Cluster, ClusterManager
from corral.error import (
    CompositeError,
    ControllerLost,
    EngineError,
    NoEnginesRegistered,
    RemoteError,
    TaskAborted,
    TimeoutError,
)

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "AsyncHubResult",
    "AsyncMapResult",
    "AsyncResult",
    "BroadcastView",
    "Client",
    "Cluster",
    "ClusterManager",
    "CompositeError",
    "ControllerLost",
    "Dependency",
    "DirectView",
    "EngineError",
    "LoadBalancedView",
    "NoEnginesRegistered",
    "Reference",
    "RemoteError",
    "TaskAborted",
    "TimeoutError",
    "ViewExecutor",
    "__version__",
    "depend",
    "dependent",
    "error",
    "interactive",
    "load_ipython_extension",
    "parallel",
    "register_joblib_backend",
    "remote",
    "require",
]


def register_joblib_backend(name="ipyparallel", make_default=False):
    """``joblib.Parallel(backend=name)`` on the default profile's cluster (started for the
    call if none runs), as ``ipyparallel.register_joblib_backend``; ``view.
    register_joblib_backend()`` picks a view instead."""
    from corral.client.joblib import register_default

    register_default(name, make_default)


def load_ipython_extension(ip):
    """``%load_ext corral``: the parallel magics (``%px``, ``%%px``, ``%autopx``, ...),
    on the default profile's cluster unless a client is made first."""
    from corral.client.magics import load_ipython_extension as load

    load(ip)
