"""``Client(sshserver=...)``: the controller's ports reached through SSH local forwards.

As in ipyparallel, every port of the connection file (registration, control, mux, task,
iopub, notification, broadcast, and a corral controller's corral_iopub) is forwarded from a
free port on this machine's 127.0.0.1 to the controller's address as the SSH server sees it, and the client connects to the
local ends. Unlike pyzmq's ``zmq.ssh.tunnel`` (which ipyparallel uses), all the forwards
live in ONE ``ssh -N`` process that this client owns: ``zmq.ssh.tunnel`` runs one
``ssh -f ... sleep 60`` per socket, which backgrounds itself (its pid is lost, so it cannot
be stopped) and lingers up to a minute after the client is gone. Here ssh runs under a small
watchdog shell that holds a pipe from the client: ``close()``, or the client process dying
(even by SIGKILL), ends ssh at once; and a tunnel that dies is seen by the client as a lost
controller.

Only key-based (or agent) authentication: ssh runs with ``BatchMode=yes`` and never prompts.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from corral.util import WILDCARDS, select_random_ports

log = logging.getLogger("corral.client")

#: The connection file's port fields, each forwarded (ipyparallel's list).
#: `corral_iopub` is a corral controller's per-client IOPub (docs/PROTOCOL.md §11).
CHANNELS = ("registration", "control", "mux", "task", "iopub", "notification", "broadcast",
            "corral_iopub")

class SSHTunnelError(ConnectionError):
    """ssh could not set up the forwards (unknown host key, refused key, bad server...)."""


def split_server(server: str) -> tuple[str, str | None]:
    """``'user@host:port'`` -> ``('user@host', 'port')``, as ipyparallel and pyzmq read it."""
    server = server.strip()
    if not server:
        raise ValueError("sshserver is empty: give 'host', 'user@host' or 'user@host:port'")
    user, at, host = server.rpartition("@")
    host, colon, port = host.partition(":")
    if colon and not port.isdigit():
        raise ValueError(f"sshserver {server!r}: the part after ':' must be a port number")
    if not host:
        raise ValueError(f"sshserver {server!r} has no host name")
    return f"{user}{at}{host}", (port or None)


def remote_ip(interface: str, location: str | None) -> str:
    """The controller's address as seen from the SSH server: the connection file's ip, or
    for a wildcard bind (0.0.0.0) its ``location`` if known, else the server's loopback."""
    ip = interface.split("://", 1)[-1]
    if ip in WILDCARDS:
        return location or "127.0.0.1"
    return ip


class SSHTunnel:
    """One ``ssh -N -L ...`` process forwarding each of ``ports`` (the controller's, on
    ``target_ip`` as ``server`` sees it) from a local port; ``local[port]`` is its local end."""

    def __init__(self, server: str, target_ip: str, ports: list[int], keyfile: str | None = None,
                 ssh: str = "ssh"):
        self.server = server
        self.target_ip = target_ip
        self.ports = sorted(set(ports))
        self.keyfile = keyfile
        self.ssh = ssh
        self.local: dict[int, int] = {}
        #: the watchdog shell (see _WATCHDOG) whose child is ssh
        self.process: subprocess.Popen | None = None
        self.ssh_pid: int | None = None
        self._stderr = None

    @property
    def pid(self) -> int | None:
        """The ssh process's pid (a child of this client's watchdog shell)."""
        return self.ssh_pid

    def command(self) -> list[str]:
        destination, port = split_server(self.server)
        cmd = [self.ssh, "-N", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
               "-o", "ServerAliveInterval=15"]
        if self.keyfile:
            cmd += ["-i", str(Path(self.keyfile).expanduser())]
        if port:
            cmd += ["-p", port]
        for remote in self.ports:
            cmd += ["-L", f"127.0.0.1:{self.local[remote]}:{self.target_ip}:{remote}"]
        return cmd + [destination]

    def start(self, timeout: float = 20.0) -> "SSHTunnel":
        """Start ssh and return once its forwards listen; raise SSHTunnelError saying why
        if ssh exits first (one retry if a chosen local port was taken meanwhile)."""
        if shutil.which(self.ssh) is None:
            raise SSHTunnelError(
                f"Client(sshserver=...) needs the OpenSSH client ({self.ssh!r} is not on PATH)")
        for attempt in range(2):
            self.local = dict(zip(self.ports, select_random_ports(len(self.ports))))
            self._stderr = tempfile.TemporaryFile()
            self.process = subprocess.Popen(
                ["sh", "-c", _WATCHDOG, "sh", *self.command()], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self._stderr)
            self.ssh_pid = int(self.process.stdout.readline())
            self.process.stdout.close()
            log.debug("ssh tunnel (pid %s) to %s: %s", self.pid, self.server, self.local)
            error = self._wait_listening(timeout)
            if error is None:
                return self
            self.close()
            if "forward" not in error.lower() or attempt:
                raise SSHTunnelError(
                    f"could not tunnel to the controller through {self.server!r}: {error}. "
                    "corral's client runs ssh with BatchMode=yes (no password prompts): make "
                    "sure `ssh " + self.server.replace(":", " -p ") + "` logs in without a "
                    "password (an ssh key, sshkey=..., or ssh-agent) and that the host key is "
                    "in known_hosts.")
        raise AssertionError("unreachable")

    def _wait_listening(self, timeout: float) -> str | None:
        """None once the first forward accepts connections, else why ssh failed."""
        probe = self.local[self.ports[0]]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return self._error_text() or f"ssh exited with status {self.process.returncode}"
            try:
                with socket.create_connection(("127.0.0.1", probe), timeout=1):
                    return None
            except OSError:
                time.sleep(0.05)
        return f"ssh did not open its forwards within {timeout:g} s ({self._error_text()})"

    def _error_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self, timeout: float = 5.0) -> None:
        """End ssh (closing the watchdog's stdin makes it stop ssh), SIGKILL if it lingers."""
        if self.process is not None:
            if not self.process.stdin.closed:
                self.process.stdin.close()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                # the watchdog still waits for ssh, so ssh_pid is still ssh's
                os.kill(self.ssh_pid, signal.SIGKILL)
                self.process.kill()
                self.process.wait(timeout)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


#: Runs ssh ("$@") and prints its pid; ssh lives while this shell's stdin is open, so it
#: ends when the client closes the pipe, and also when the client process dies (even by
#: SIGKILL, when no Python code runs). The shell exits with ssh's status.
_WATCHDOG = """
exec 3<&0
"$@" </dev/null >/dev/null 3<&- &
child=$!
echo "$child"
{ read _ <&3; kill "$child" 2>/dev/null; } >/dev/null &
watcher=$!
exec 3<&-
wait "$child"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"""


def tunnelled(info: dict, tunnel: SSHTunnel) -> dict:
    """The connection info with every channel's port replaced by its local forward."""
    out = dict(info, interface="tcp://127.0.0.1")
    for channel in CHANNELS:
        if info.get(channel) is not None:
            out[channel] = tunnel.local[int(info[channel])]
    return out


def open_tunnel(info: dict, sshserver: str, sshkey: str | None) -> SSHTunnel:
    """An SSH tunnel for every channel of the connection info ``info``, started."""
    ports = [int(info[channel]) for channel in CHANNELS if info.get(channel) is not None]
    target = remote_ip(info.get("interface", ""), info.get("location") or None)
    return SSHTunnel(sshserver, target, ports, keyfile=sshkey).start()
