"""The controller on another host, started over SSH: `Cluster(controller='ssh',
controller_launcher_options={'location': 'user@host[:port]'})` (ipyparallel's
SSHControllerLauncher).

One ``ssh`` starts ``corral controller`` there in the background (nohup, its output in the
remote profile's ``log/``) with ``--profile-dir`` the remote profile (the local profile path
relative to the home dir, as ipyparallel does, or ``remote_profile_dir``); the controller
writes its connection files there, and they are fetched with ``scp`` into the local
profile, where clients and engine launchers find them. The controller advertises the SSH
host's name as ``--location`` unless the cluster gives one; it binds to
``Cluster(controller_ip=...)``, which must be an address engines and clients reach.
Stopping is a short ``ssh`` on the recorded pid, which acts only on a process still running
with this profile on its command line.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

from corral.cluster.controller_launcher import ControllerLauncher
from corral.cluster.ssh import SSH_TIMEOUT, SSHCommands, SSHLaunchError, _alive_script, split_host, strip_home

OPTIONS = ("location", "hostname", "user", "ssh_cmd", "ssh_args", "scp_cmd", "scp_args",
           "remote_python", "controller_cmd", "remote_profile_dir")


class SSHControllerLauncher(SSHCommands, ControllerLauncher):
    """Options: ``location`` (``user@host[:port]``; or ipyparallel's ``hostname`` and
    ``user``), ``ssh_cmd``, ``ssh_args``, ``scp_cmd``, ``scp_args``, ``remote_python``
    (default python3), ``controller_cmd`` (replaces ``remote_python -m corral``),
    ``remote_profile_dir``."""

    kind = "ssh"
    #: Each check for the connection files is an ssh round trip.
    poll_interval = 0.2

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        unknown = sorted(set(self.options) - set(OPTIONS))
        if unknown:
            raise TypeError(f"the SSH controller launcher got unknown option(s) {unknown}; it takes {list(OPTIONS)}")
        opts = self.options
        location = opts.get("location") or opts.get("hostname")
        if not location:
            raise ValueError("controller='ssh' needs controller_launcher_options={'location': "
                             "'user@host[:port]'}: the host to run the controller on")
        if opts.get("user") and "@" not in location:
            location = f"{opts['user']}@{location}"
        split_host(location)  # a bad port fails here
        self.location = location
        self.ssh_cmd = list(opts.get("ssh_cmd", ["ssh"]))
        self.ssh_args = list(opts.get("ssh_args", []))
        self.scp_cmd = list(opts.get("scp_cmd", ["scp"]))
        self.scp_args = list(opts.get("scp_args", []))
        self.remote_python = opts.get("remote_python", "python3")
        self.controller_cmd = list(opts["controller_cmd"]) if opts.get("controller_cmd") else None
        self.remote_profile_dir = opts.get("remote_profile_dir") or strip_home(self.profile_dir)
        if "--location" not in self.controller_args:
            host = split_host(location)[0].rpartition("@")[2]
            self.controller_args += ["--location", host]
        #: The remote controller's pid and log, once started.
        self.pid: int | None = None
        self.remote_log = ""

    # -- paths ------------------------------------------------------------------------
    def remote_file(self, role: str) -> str:
        name = f"ipcontroller-{self.cluster_id}-{role}.json" if self.cluster_id else f"ipcontroller-{role}.json"
        return f"{self.remote_profile_dir}/security/{name}"

    def local_file(self, role: str) -> Path:
        return self.profile_dir / "security" / Path(self.remote_file(role)).name

    def _same_files(self) -> bool:
        """The "remote" profile is this machine's profile: nothing to copy."""
        name = split_host(self.location)[0].rpartition("@")[2]
        remote = Path(self.remote_profile_dir)
        remote = remote if remote.is_absolute() else Path.home() / remote
        return name in ("localhost", "127.0.0.1", "::1", os.uname().nodename) and (
            remote.absolute() == self.profile_dir.absolute())

    @property
    def reuse(self) -> bool:
        return "--reuse" in self.controller_args or "--restore" in self.controller_args

    # -- the contract -----------------------------------------------------------------
    def start(self) -> None:
        security = f"{self.remote_profile_dir}/security"
        logs = f"{self.remote_profile_dir}/log"
        self.remote_log = f"{logs}/corral-controller-{self.cluster_id or 'default'}-{time.time():.4f}.log"
        stale = "" if self.reuse or self._same_files() else (
            f" && rm -f {shlex.quote(self.remote_file('client'))} {shlex.quote(self.remote_file('engine'))}")
        program = self.controller_cmd or [self.remote_python, "-m", "corral"]
        command = [*program, *self.controller_cli_args(self.remote_profile_dir)]
        # Preparation, then the controller alone in the background (a backgrounded `a && b`
        # list would be a subshell holding the ssh session's output open).
        script = (f"mkdir -p {shlex.quote(logs)} && mkdir -p -m 700 {shlex.quote(security)}{stale} || exit 1\n"
                  f"nohup {shlex.join(command)} > {shlex.quote(self.remote_log)} 2>&1 < /dev/null & echo $!")
        out = self.ssh(self.location, script, "starting the controller").split()
        if len(out) != 1 or not out[0].isdigit():
            raise SSHLaunchError(f"starting the controller on {self.location}: expected its pid, got {out!r}")
        self.pid = int(out[0])

    def fetch_connection_files(self) -> None:
        if self._same_files():
            return
        client, engine = self.remote_file("client"), self.remote_file("engine")
        ready = self.ssh(self.location, f"test -s {shlex.quote(client)} && test -s {shlex.quote(engine)} && echo yes || true",
                         "looking for the connection files").strip()
        if ready != "yes":
            return
        fetched = []
        for role in ("client", "engine"):
            local = self.local_file(role)
            part = local.with_name(local.name + ".fetched")
            self.scp_from(self.location, self.remote_file(role), part)
            try:
                json.loads(part.read_text())
            except ValueError:  # caught while the controller wrote it: fetch again later
                part.unlink(missing_ok=True)
                return
            fetched.append((part, local))
        for part, local in fetched:
            os.replace(part, local)

    def _alive(self) -> str:
        return _alive_script([self.pid], str(self.remote_profile_dir)) if self.pid else ""

    def running(self) -> bool:
        if not self.pid:
            return False
        return bool(self.ssh(self.location, self._alive() + "alive", "checking the controller").strip())

    def signal(self, sig: int) -> None:
        if self.pid:
            self.ssh(self.location, self._alive() + f'left=$(alive); [ -z "$left" ] || kill -{int(sig)} $left',
                     "signalling the controller")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (the controller removes its files), SIGKILL after ``timeout``; the files of
        a killed controller are removed too (unless ``--reuse``)."""
        if not self.pid:
            return
        steps = max(1, int(timeout * 10))
        script = self._alive() + (
            'left=$(alive); [ -z "$left" ] || kill -TERM $left 2>/dev/null\n'
            f'i=0; while [ -n "$left" ] && [ $i -lt {steps} ]; do sleep 0.1; left=$(alive); i=$((i+1)); done\n'
            '[ -z "$left" ] || kill -KILL $left 2>/dev/null\n'
        )
        if not self.reuse and not self._same_files():
            script += f"rm -f {shlex.quote(self.remote_file('client'))} {shlex.quote(self.remote_file('engine'))}\n"
        self.ssh(self.location, script + "true", "stopping the controller", timeout=SSH_TIMEOUT + timeout)

    def log_tail(self, lines: int = 20) -> str:
        if not self.remote_log:
            return ""
        try:
            return self.ssh(self.location, f"tail -n {int(lines)} {shlex.quote(self.remote_log)}",
                            "reading the controller's log")
        except SSHLaunchError as e:
            return str(e)

    def describe(self) -> str:
        return f"controller on {self.location} (pid {self.pid}, log {self.remote_log})"

    def to_dict(self) -> dict:
        return {**self.base_record(), "options": self.options, "pid": self.pid, "remote_log": self.remote_log}

    @classmethod
    def from_dict(cls, record: dict) -> "SSHControllerLauncher":
        self = cls(profile_dir=record["profile_dir"], cluster_id=record.get("cluster_id", ""),
                   log_dir=record["log_dir"], controller_args=record.get("controller_args", ()),
                   **record.get("options", {}))
        self.controller_args = list(record.get("controller_args", ()))
        self.pid = record.get("pid")
        self.remote_log = record.get("remote_log", "")
        return self
