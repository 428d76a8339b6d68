"""A real OpenSSH server for the SSH tests, on 127.0.0.1 and a free port, run as this user.

Everything it needs is made in a temp dir by the test: its host key, a client key that is
the only authorized key, a known_hosts naming the host key, and an ssh config that uses
them without prompts (BatchMode). `ssh_args` are the client options for that config; the
`bin` dir holds `ssh`/`scp` wrappers that add them, for code (such as pyzmq's tunnel) that
runs a plain `ssh` from PATH. The server is stopped by pid (its process group: the
listener and its per-connection children) when the test ends.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
MISSING = (
    "the SSH tests need OpenSSH's server ({what} not found); `make install` (and `make "
    "test`) install Debian's openssh-server: run it, or `apt-get install openssh-server`"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "corral-test", "-f", str(path)],
        check=True, stdin=subprocess.DEVNULL,
    )
    return path.with_suffix(".pub").read_text().strip()


def missing_programs() -> list[str]:
    found = [SSHD if os.access(SSHD, os.X_OK) else None] + [shutil.which(p) for p in ("ssh", "scp", "ssh-keygen")]
    return [name for name, path in zip((SSHD, "ssh", "scp", "ssh-keygen"), found) if not path]


class SSHServer:
    def __init__(self, root: Path):
        missing = missing_programs()
        if missing:
            raise RuntimeError(MISSING.format(what=", ".join(missing)))
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.user = getpass.getuser()
        self.log_path = self.root / "sshd.log"
        self.process: subprocess.Popen | None = None

        host_pub = _keygen(self.root / "host_key")
        self.client_key = self.root / "client_key"
        (self.root / "authorized_keys").write_text(_keygen(self.client_key) + "\n")
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {host_pub}\n")
        self.config = self.root / "sshd_config"
        self.config.write_text("\n".join([
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {self.root / 'host_key'}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            f"PidFile {self.root / 'sshd.pid'}",
            "UsePAM no",
            # tmp dirs are not the 0700 home dirs sshd insists on by default
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",
            "AllowTcpForwarding yes",
            # scp speaks SFTP since OpenSSH 9.0
            "Subsystem sftp internal-sftp",
            # DEBUG1 logs each forwarded channel's target ("server_request_direct_tcpip"),
            # so a test can see that traffic really went through this server
            "LogLevel DEBUG1",
            "",
        ]))
        self.client_config = self.root / "ssh_config"
        self.client_config.write_text("\n".join([
            "Host *",
            f"  IdentityFile {self.client_key}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {self.known_hosts}",
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            "  ConnectTimeout 10",
            "",
        ]))
        #: client options (ssh and scp) for this server's keys
        self.ssh_args = ["-F", str(self.client_config)]
        self.bin = self.root / "bin"
        self.bin.mkdir(exist_ok=True)
        for prog in ("ssh", "scp"):
            wrapper = self.bin / prog
            wrapper.write_text(f'#!/bin/sh\nexec {shutil.which(prog)} -F "{self.client_config}" "$@"\n')
            wrapper.chmod(0o755)

    @property
    def address(self) -> str:
        """`user@host:port`, the form `Client(sshserver=...)` and the launcher take."""
        return f"{self.user}@{self.host}:{self.port}"

    def start(self, timeout: float = 15) -> "SSHServer":
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            # sshd as root wants its privilege-separation dir (normally made by systemd)
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited ({self.process.returncode}):\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"sshd did not listen on {self.host}:{self.port}:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(5)
                return
            except subprocess.TimeoutExpired:
                continue

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def forwarded_targets(self) -> list[int]:
        """Ports the server has forwarded connections to (`ssh -L` channels), from its log."""
        ports = []
        for line in self.log().splitlines():
            if "server_request_direct_tcpip" in line and "target" in line:
                ports.append(int(line.rsplit("port", 1)[1].split()[0].strip(",")))
        return ports

    def run(self, command: str, timeout: float = 20) -> subprocess.CompletedProcess:
        """`command` run through this server by a real ssh client."""
        return subprocess.run(
            ["ssh", *self.ssh_args, "-p", str(self.port), f"{self.user}@{self.host}", command],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
