"""The user API: ``Client``, views and ``AsyncResult``, over the Rust core (``corral._core``).

The Python side only packs requests (pickling) and unpacks results; sockets, message
filing and waiting live in Rust, which never needs the GIL.
"""

from corral.client.asyncresult import AsyncResult
from corral.client.map import AsyncMapResult
from corral.client.client import Client, find_connection_file
from corral.client.hubresult import AsyncHubResult
from corral.client.view import BroadcastView, DirectView, LoadBalancedView, View

__all__ = [
    "AsyncHubResult",
    "AsyncMapResult",
    "AsyncResult",
    "BroadcastView",
    "Client",
    "DirectView",
    "LoadBalancedView",
    "View",
    "find_connection_file",
]
