"""What ``Client(...)`` makes of ipyparallel's keywords: each one is honoured, or refused
with a message that says what to do instead, never silently dropped.

ipyparallel 9.2's ``Client(connection_info=None, *, url_file, profile, profile_dir,
ipython_dir, context, debug, sshserver, sshkey, password, paramiko, timeout, cluster_id,
cluster, **extra_args)``: the connection info is a path or a dict; without one, the
profile's file. Unlike ipyparallel, a missing profile file fails at once (ipyparallel waits
``timeout`` seconds for it) with a message that says how to start a cluster.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

from corral.connection import connection_file, resolve_profile_dir

log = logging.getLogger("corral.client")

SSH_KEYWORDS = ("sshserver", "sshkey", "password", "paramiko")

SSH_UNSUPPORTED = (
    "corral's Client cannot tunnel through SSH yet ({given}). Forward the controller's ports "
    "yourself (for each port in the connection file: `ssh -N -L <port>:127.0.0.1:<port> "
    "<host>`) and connect without {given}, or use ipyparallel.Client for this connection."
)


def refuse_unsupported(ssh: dict, context, extra: dict) -> None:
    """SSH tunnels and Session options are refused; a pyzmq ``context`` is ignored with a
    warning (corral's sockets live in its Rust core)."""
    given = [name for name in SSH_KEYWORDS if ssh.get(name)]
    if given:
        raise NotImplementedError(SSH_UNSUPPORTED.format(given=", ".join(f"{g}=" for g in given)))
    if context is not None:
        warnings.warn("Client(context=...) is ignored: corral's client sockets live in its "
                      "Rust core, not in a pyzmq Context", UserWarning, stacklevel=3)
    if extra:
        raise TypeError(
            f"Client() got keywords corral does not support: {', '.join(sorted(extra))}. "
            "corral takes its session settings (key, signature scheme) from the connection "
            "file and always uses JSON messages with pickled buffers.")


def take_deprecated_url_file(connection_info, extra: dict):
    """``url_or_file=`` (ipyparallel's old name) still works, with ipyparallel's warning."""
    if "url_or_file" in extra:
        warnings.warn("url_or_file arg no longer supported, use positional connection_info "
                      "argument", DeprecationWarning, stacklevel=3)
        return extra.pop("url_or_file")
    return connection_info


def profile_connection_file(profile, profile_dir, ipython_dir, cluster_id, cluster) -> Path:
    """The client file of a profile: ``cluster``'s own when given, else ``profile_dir``, else
    ``<ipython_dir or $IPYTHONDIR>/profile_<profile>``."""
    if cluster is not None:
        return Path(cluster.client_file)
    if not profile_dir and ipython_dir:
        profile_dir = Path(ipython_dir).expanduser() / f"profile_{profile or 'default'}"
    return connection_file(resolve_profile_dir(profile, profile_dir), "client", cluster_id)


class DictConnectionFile:
    """A connection-info dict as a private file for the Rust core to read (0600 in a 0700
    folder), removed once the client has connected."""

    def __init__(self, info: dict):
        if not isinstance(info.get("key", ""), str):
            raise TypeError("connection_info['key'] must be a string")
        self._dir = tempfile.mkdtemp(prefix="corral-connection-")
        self.path = Path(self._dir) / "client.json"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)

    def remove(self) -> None:
        for remove in (lambda: self.path.unlink(), lambda: os.rmdir(self._dir)):
            try:
                remove()
            except OSError:
                pass


def check_connection_info(connection_info) -> None:
    """ipyparallel's refusal of a bare URL, which carries no key or ports."""
    if isinstance(connection_info, str) and "://" in connection_info:
        raise ValueError(f"single urls ({connection_info!r}) cannot be specified, url-files "
                         "must be used.")
