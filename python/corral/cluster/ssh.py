"""Engines on other hosts, started over SSH (ipyparallel's ``SSHEngineSetLauncher``).

For each host of ``engines`` (``{'host': n, 'user@host2:2222': m}``, or ipyparallel's
``{'host': {'n': 2, 'engine_args': [...]}}``), the engine connection file is copied with
``scp`` into the remote profile's ``security/`` folder (the local profile path with the home
dir stripped, so relative to the remote home, as ipyparallel does), then one ``ssh`` runs
``corral engine`` there n times in the background and prints their pids. Nothing stays
connected: signal, stop and ``running`` are short ``ssh`` commands on the recorded pids,
which act only on processes still running with this set's connection file on their command
line, so a pid the remote system has reused meanwhile is never touched.

The remote side needs a POSIX shell, ``ps`` and corral installed for ``remote_python``; the
engines connect back to the controller's address in the connection file over TCP, so the
controller must listen on an address the hosts reach (``corral controller --ip``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

from corral.cluster.launcher import EngineSetLauncher

#: Per-host settings an ``engines`` entry may override (ipyparallel's dict form).
HOST_OPTIONS = ("n", "engine_args", "remote_python", "engine_cmd")
SSH_TIMEOUT = 60.0


class SSHLaunchError(RuntimeError):
    """An ssh or scp command failed; the message has its output."""


def split_host(host: str) -> tuple[str, str | None]:
    """``'user@host:port'`` -> ``('user@host', 'port')``."""
    user, at, rest = host.rpartition("@")
    name, _, port = rest.partition(":")
    if port and not port.isdigit():
        raise ValueError(f"engines host {host!r}: the part after ':' must be a port number")
    return f"{user}{at}{name}", (port or None)


def strip_home(path: Path) -> str:
    """``/home/you/.ipython/profile_x`` -> ``.ipython/profile_x`` (relative to a remote home)."""
    home = Path.home()
    try:
        return str(Path(path).absolute().relative_to(home))
    except ValueError:
        return str(path)


def _alive_script(pids: list[int], marker: str) -> str:
    """Shell that defines ``alive``: which of ``pids`` still run with ``marker`` in their
    command line (a reused pid, or a zombie, does not count)."""
    return (
        f"pids={shlex.quote(' '.join(map(str, pids)))}; marker={shlex.quote(marker)}\n"
        "alive() { out=; for p in $pids; do "
        "if ps -o args= -p \"$p\" 2>/dev/null | grep -qF -- \"$marker\"; then out=\"$out $p\"; fi; "
        "done; echo $out; }\n"
    )


class HostSet:
    """The engines of one host: where they run and how to find them again."""

    def __init__(self, host: str, pids: list[int], remote_file: str, logs: list[str], copied: bool):
        self.host = host
        self.pids = pids
        self.remote_file = remote_file
        self.logs = logs
        self.copied = copied

    def to_dict(self) -> dict:
        return dict(host=self.host, pids=self.pids, remote_file=self.remote_file, logs=self.logs,
                    copied=self.copied)


class SSHCommands:
    """Runs ``ssh`` and ``scp`` with the launcher's commands and options (``ssh_cmd``,
    ``ssh_args``, ``scp_cmd``, ``scp_args``); shared by the engine and controller launchers."""

    ssh_cmd: list[str]
    ssh_args: list[str]
    scp_cmd: list[str]
    scp_args: list[str]

    def _run(self, argv: list[str], what: str, timeout: float = SSH_TIMEOUT) -> str:
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SSHLaunchError(f"{what}: `{shlex.join(argv)}` took over {timeout:g} s") from None
        if done.returncode != 0:
            raise SSHLaunchError(f"{what} failed (status {done.returncode}): "
                                 f"`{shlex.join(argv)}`\n{done.stderr.strip()}")
        return done.stdout

    def ssh(self, host: str, script: str, what: str, timeout: float = SSH_TIMEOUT) -> str:
        """Run ``script`` with the remote user's shell on ``host`` (``user@host[:port]``).
        BatchMode: a launcher cannot answer a password prompt."""
        login, port = split_host(host)
        argv = [*self.ssh_cmd, *self.ssh_args, "-o", "BatchMode=yes"]
        argv += ["-p", port] if port else []
        return self._run(argv + [login, script], f"{what} on {host}", timeout)

    def scp(self, host: str, local: Path, remote: str) -> None:
        login, port = split_host(host)
        argv = [*self.scp_cmd, *self.scp_args, "-o", "BatchMode=yes"]
        argv += ["-P", port] if port else []
        self._run(argv + [str(local), f"{login}:{remote}"], f"copying {local.name} to {host}")

    def scp_from(self, host: str, remote: str, local: Path) -> None:
        """Copy ``remote`` on ``host`` to ``local`` (mode 0600: connection files hold the key)."""
        login, port = split_host(host)
        argv = [*self.scp_cmd, *self.scp_args, "-o", "BatchMode=yes"]
        argv += ["-P", port] if port else []
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".part")
        self._run(argv + [f"{login}:{remote}", str(tmp)], f"copying {remote} from {host}")
        tmp.chmod(0o600)
        os.replace(tmp, local)


class SSHEngineSetLauncher(SSHCommands, EngineSetLauncher):
    """Engines started over SSH on the hosts of ``engines``; ``start(n)`` starts at most n
    (ipyparallel's meaning), filling the hosts in order."""

    kind = "ssh"

    def __init__(
        self,
        *,
        engines: dict | str | None = None,
        ssh_cmd: list[str] | tuple = ("ssh",),
        ssh_args: list[str] | tuple = (),
        scp_cmd: list[str] | tuple = ("scp",),
        scp_args: list[str] | tuple = (),
        remote_python: str = "python3",
        engine_cmd: list[str] | tuple | None = None,
        remote_profile_dir: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(engines, str):
            engines = json.loads(engines)
        self.engines = dict(engines or {})
        for host, spec in self.engines.items():
            if isinstance(spec, dict) and set(spec) - set(HOST_OPTIONS):
                raise ValueError(f"engines[{host!r}] has unknown settings "
                                 f"{sorted(set(spec) - set(HOST_OPTIONS))}; known: {HOST_OPTIONS}")
        self.ssh_cmd = list(ssh_cmd)
        self.ssh_args = list(ssh_args)
        self.scp_cmd = list(scp_cmd)
        self.scp_args = list(scp_args)
        self.remote_python = remote_python
        self.engine_cmd = list(engine_cmd) if engine_cmd else None
        self.remote_profile_dir = remote_profile_dir or strip_home(self.profile_dir)
        self.started: list[HostSet] = []

    # -- the contract -------------------------------------------------------------------

    def start(self, n: int | None = None) -> None:
        """At most ``n`` engines (all that ``engines`` lists when None)."""
        if not self.engines:
            raise ValueError("SSHEngineSetLauncher needs engines={'host': n, ...}: the hosts "
                             "to start engines on and how many on each")
        if n is None:
            n = sum(spec.get("n", 1) if isinstance(spec, dict) else int(spec)
                    for spec in self.engines.values())
        left = n
        for host, spec in self.engines.items():
            if left <= 0:
                break
            spec = dict(spec) if isinstance(spec, dict) else {"n": int(spec)}
            count = min(int(spec.pop("n", 1)), left)
            if count > 0:
                self.started.append(self._start_host(host, count, spec))
                left -= count
        self.n = n - left

    def _start_host(self, host: str, count: int, overrides: dict) -> HostSet:
        security = f"{self.remote_profile_dir}/security"
        logs_dir = f"{self.remote_profile_dir}/log"
        remote_file = f"{security}/{self.engine_file.name}"
        self.ssh(host, f"mkdir -p {shlex.quote(logs_dir)} && mkdir -p -m 700 {shlex.quote(security)}",
                 "creating the remote profile")
        copied = not self._is_same_file(host, remote_file)
        if copied:
            self.scp(host, self.engine_file, remote_file)
        python = overrides.get("remote_python", self.remote_python)
        cmd = list(overrides.get("engine_cmd") or self.engine_cmd or [python, "-m", "corral", "engine"])
        args = ["--file", remote_file, "--log-level", self.log_level,
                *overrides.get("engine_args", self.engine_args)]
        stamp = f"{time.time():.4f}"
        logs = [f"{logs_dir}/corral-engine-{self.cluster_id}-{stamp}-{i}.log" for i in range(count)]
        # Each engine detached from the ssh session (nohup, own output), so the ssh command
        # returns at once and a lost connection does not take the engines down.
        script = "\n".join(
            f"nohup {shlex.join(cmd + args)} > {shlex.quote(log)} 2>&1 < /dev/null & echo $!"
            for log in logs
        )
        out = self.ssh(host, script, "starting engines")
        pids = [int(word) for word in out.split()]
        if len(pids) != count:
            raise SSHLaunchError(f"starting engines on {host}: expected {count} pids, got {out!r}")
        return HostSet(host, pids, remote_file, logs, copied)

    def _is_same_file(self, host: str, remote_file: str) -> bool:
        """A host that is this machine, with the remote path the local file: nothing to copy
        (scp onto itself would truncate it)."""
        login, _ = split_host(host)
        name = login.rpartition("@")[2]
        local_names = {"localhost", "127.0.0.1", "::1", os.uname().nodename}
        path = Path(remote_file) if os.path.isabs(remote_file) else Path.home() / remote_file
        return name in local_names and path.absolute() == self.engine_file.absolute()

    def signal(self, sig: int) -> None:
        for hs in self.started:
            self.ssh(hs.host, _alive_script(hs.pids, hs.remote_file)
                     + f'left=$(alive); [ -z "$left" ] || kill -{int(sig)} $left', "signalling engines")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the engines still running, SIGKILL to those left after ``timeout``; the
        copied connection file (it holds the cluster key) is removed."""
        steps = max(1, int(timeout * 10))
        for hs in self.started:
            script = _alive_script(hs.pids, hs.remote_file) + (
                'left=$(alive); [ -z "$left" ] || kill -TERM $left 2>/dev/null\n'
                f'i=0; while [ -n "$left" ] && [ $i -lt {steps} ]; do sleep 0.1; left=$(alive); i=$((i+1)); done\n'
                '[ -z "$left" ] || kill -KILL $left 2>/dev/null\n'
            )
            if hs.copied:
                script += f"rm -f {shlex.quote(hs.remote_file)}\n"
            self.ssh(hs.host, script + "true", "stopping engines", timeout=SSH_TIMEOUT + timeout)

    def running(self) -> bool:
        return any(
            self.ssh(hs.host, _alive_script(hs.pids, hs.remote_file) + "alive", "checking engines").strip()
            for hs in self.started
        )

    def failure(self) -> str | None:
        """Engines that are no longer running on their hosts (one ssh per host)."""
        for hs in self.started:
            alive = self.ssh(hs.host, _alive_script(hs.pids, hs.remote_file) + "alive", "checking engines").split()
            if len(alive) < len(hs.pids):
                gone = sorted(set(map(str, hs.pids)) - set(alive))
                return (f"{len(gone)} engine(s) on {hs.host} exited (pids {', '.join(gone)}); "
                        f"their logs end with:\n{self.remote_log_tail()}")
        return None

    def remote_log_tail(self, lines: int = 20) -> str:
        """The last lines of every engine's remote log (for error messages)."""
        out = []
        for hs in self.started:
            files = " ".join(shlex.quote(log) for log in hs.logs)
            try:
                out.append(self.ssh(hs.host, f"tail -n {int(lines)} {files}", "reading engine logs"))
            except SSHLaunchError as e:
                out.append(str(e))
        return "\n".join(out)

    def to_dict(self) -> dict:
        return dict(
            kind=self.kind, engine_file=str(self.engine_file), profile_dir=str(self.profile_dir),
            cluster_id=self.cluster_id, log_dir=str(self.log_dir), log_level=self.log_level,
            engine_args=self.engine_args, engines=self.engines, ssh_cmd=self.ssh_cmd,
            ssh_args=self.ssh_args, scp_cmd=self.scp_cmd, scp_args=self.scp_args,
            remote_python=self.remote_python, engine_cmd=self.engine_cmd,
            remote_profile_dir=self.remote_profile_dir, n=self.n,
            started=[hs.to_dict() for hs in self.started],
        )

    @classmethod
    def from_dict(cls, record: dict) -> "SSHEngineSetLauncher":
        record = dict(record)
        record.pop("kind", None)
        started = record.pop("started", [])
        n = record.pop("n", 0)
        launcher = cls(**record)
        launcher.started = [HostSet(**hs) for hs in started]
        launcher.n = n
        return launcher


__all__ = ["SSHCommands", "SSHEngineSetLauncher", "SSHLaunchError"]
