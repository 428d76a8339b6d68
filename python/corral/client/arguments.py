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
from corral.util import WILDCARDS, is_loopback, is_this_machine

log = logging.getLogger("corral.client")

SSH_PASSWORD_UNSUPPORTED = (
    "corral's Client does not log in to an SSH server with a password: its tunnel runs "
    "OpenSSH's ssh without prompts. Use key-based login instead (an ssh key on the server, "
    "e.g. `ssh-copy-id {server}`; then sshkey='~/.ssh/id_...' or an ssh-agent) and drop "
    "password=."
)
SSH_PARAMIKO_UNSUPPORTED = (
    "corral's Client tunnels with OpenSSH's ssh command, not paramiko: drop paramiko=True "
    "(the ssh command reads your ~/.ssh/config, keys and agent)."
)


def refuse_unsupported(ssh: dict, context, extra: dict) -> None:
    """SSH password login, paramiko tunnels and Session options are refused; a pyzmq
    ``context`` is ignored with a warning (corral's sockets live in its Rust core)."""
    if ssh.get("password"):
        raise NotImplementedError(
            SSH_PASSWORD_UNSUPPORTED.format(server=ssh.get("sshserver") or "user@host"))
    if ssh.get("paramiko"):
        raise NotImplementedError(SSH_PARAMIKO_UNSUPPORTED)
    if context is not None:
        warnings.warn("Client(context=...) is ignored: corral's client sockets live in its "
                      "Rust core, not in a pyzmq Context", UserWarning, stacklevel=3)
    if extra:
        raise TypeError(
            f"Client() got keywords corral does not support: {', '.join(sorted(extra))}. "
            "corral takes its session settings (key, signature scheme) from the connection "
            "file and always uses JSON messages with pickled buffers.")


def ssh_server_for(info: dict, sshserver, sshkey) -> str | None:
    """The SSH server to tunnel through, chosen as ipyparallel chooses it: ``sshserver=``;
    else the connection file's ``ssh`` (written by ``ipcontroller --ssh``) unless the file
    says the controller listens on loopback of this very machine; else, when only
    ``sshkey=`` is given, the controller's own address. None: connect directly."""
    if sshserver:
        return sshserver
    ip = info.get("interface", "").split("://", 1)[-1]
    if info.get("ssh") and not (is_loopback(ip) and is_this_machine(info.get("location"))):
        return info["ssh"]
    if sshkey:
        return info.get("location") if ip in WILDCARDS else ip
    return None


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


def open_ssh_tunnel(path: Path, sshserver, sshkey):
    """``(tunnel, file)`` when the connection goes through SSH (see ``ssh_server_for``):
    the started tunnel and a private connection file pointing at its local ports, for the
    Rust core to read; ``(None, None)`` for a direct connection."""
    info = json.loads(Path(path).read_text())
    server = ssh_server_for(info, sshserver, sshkey)
    if not server:
        return None, None
    from corral.client.tunnel import open_tunnel, tunnelled

    tunnel = open_tunnel(info, server, sshkey)
    log.info("connecting through an SSH tunnel via %s (ssh pid %s)", server, tunnel.pid)
    return tunnel, DictConnectionFile(tunnelled(info, tunnel))
