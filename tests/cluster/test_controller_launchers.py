"""Controllers started elsewhere, chosen by name: `Cluster(controller='ssh')` through a real
OpenSSH server on 127.0.0.1 (tests/sshd.py), its connection files fetched with scp;
`Cluster(controller='mpi')` as the one rank of a real Open MPI `mpiexec -n 1`. Each runs
the seed flow with engines started elsewhere too, and stop leaves no process behind.
(Slurm: test_slurm_controller.py.)"""

from __future__ import annotations

import json
import shutil
import sys
import time

import psutil
import pytest

import corral
from cluster_processes import wait_for
from corral.cluster.controller_launcher import (
    LocalControllerLauncher,
    MPIControllerLauncher,
    find_controller_launcher,
)
from corral.cluster.ssh_controller import SSHControllerLauncher


def simulation_loop(steps):
    import time

    from corral.datapub import publish_data

    for i in range(steps):
        publish_data({"i": i})
        time.sleep(0.1)
    return steps


def seed_flow(client, n: int) -> None:
    """Publish in a loop; `ar.data` is live while it runs and final when get() returns."""
    ar = client[:].apply_async(simulation_loop, 20)
    seen = set()
    deadline = time.monotonic() + 60
    while not ar.ready() and time.monotonic() < deadline:
        seen.update(d.get("i") for d in ar.data if d)
        time.sleep(0.05)
    assert ar.get(timeout=60) == [20] * n
    assert [d["i"] for d in ar.data] == [19] * n
    assert len(seen - {None, 19}) >= 3, f"ar.data was not live while the task ran: {seen}"


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def print_logs(profile_dir) -> None:
    for log in sorted(profile_dir.rglob("*.log")):
        print(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}")


def my_ssh_processes() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.name() in ("ssh", "scp")]


def test_names_find_the_controller_launchers():
    assert find_controller_launcher("local") is LocalControllerLauncher
    assert find_controller_launcher("MPI") is MPIControllerLauncher
    assert find_controller_launcher("ssh") is SSHControllerLauncher
    assert find_controller_launcher("slurm").kind == "slurm"
    with pytest.raises(ValueError, match="unknown controller launcher 'nosuch'.*'ssh'"):
        corral.Cluster(controller="nosuch", shutdown_atexit=False)


def test_ssh_controller_needs_a_host(tmp_path):
    cluster = corral.Cluster(controller="ssh", profile_dir=tmp_path / "p", shutdown_atexit=False)
    with pytest.raises(ValueError, match="controller_launcher_options=\\{'location'"):
        cluster.start_controller_sync()
    with pytest.raises(TypeError, match="unknown option"):
        SSHControllerLauncher(profile_dir=tmp_path, cluster_id="", log_dir=tmp_path, location="h", hots=1)


def ssh_options(sshd, remote_profile) -> dict:
    return dict(ssh_args=sshd.ssh_args, scp_args=sshd.ssh_args, remote_python=sys.executable,
                remote_profile_dir=str(remote_profile))


def test_ssh_controller_and_ssh_engines_run_the_seed_flow_and_stop_clean(sshd, tmp_path):
    profile = tmp_path / "profile"
    remote_controller = tmp_path / "remote-controller"  # another host's profile, in effect
    cluster = corral.Cluster(
        n=2, profile_dir=profile, cluster_id="sshc", engine_timeout=90,
        controller="ssh",
        controller_launcher_options=dict(location=sshd.address, **ssh_options(sshd, remote_controller)),
        engines="ssh",
        engine_launcher_options=dict(engines={sshd.address: 2},
                                     **ssh_options(sshd, tmp_path / "remote-engines")),
    )
    try:
        client = cluster.start_and_connect_sync()
        controller = cluster.controller
        pid = controller.pid
        # The controller was started in a session of this sshd, not by this process. (Its
        # parent proves nothing: once its ssh session ends it is reparented, to this very
        # process when another test made it a child subreaper, tests/client/conftest.py.)
        assert psutil.Process(pid).environ().get("SSH_CONNECTION", "").endswith(f" {sshd.port}")
        # it wrote its files in the remote profile; the local ones are scp'd copies
        remote_client = remote_controller / "security" / cluster.client_file.name
        assert json.loads(remote_client.read_text()) == json.loads(cluster.client_file.read_text())
        assert cluster.client_file.stat().st_mode & 0o777 == 0o600
        assert json.loads(cluster.client_file.read_text())["location"] == sshd.host

        seed_flow(client, 2)
        engine_pids = [p for hs in cluster.engines[next(iter(cluster.engines))].started for p in hs.pids]

        # the record another process reads (`corral cluster stop`) stops it all
        recorded = json.loads(cluster.cluster_file.read_text())
        assert recorded["controller"]["class"] == "ssh"
        again = corral.Cluster.from_file(cluster.cluster_file)
        assert again.controller.running()
        again.stop_cluster_sync()
    except Exception:
        print_logs(tmp_path)
        raise
    finally:
        cluster.stop_cluster_sync()
    assert gone(pid) and all(gone(p) for p in engine_pids)
    assert not remote_client.exists(), "the remote connection files (they hold the key) stay"
    assert not cluster.client_file.exists() and not cluster.cluster_file.exists()
    assert not my_ssh_processes()
    wait_for(lambda: not psutil.Process(sshd.process.pid).children(), 10, "sshd sessions to end")


def test_a_controller_that_fails_over_ssh_says_why(sshd, tmp_path):
    cluster = corral.Cluster(
        profile_dir=tmp_path / "profile", cluster_id="bad", controller="ssh", shutdown_atexit=False,
        controller_args=["--no-such-option"],
        controller_launcher_options=dict(location=sshd.address, **ssh_options(sshd, tmp_path / "remote")),
    )
    with pytest.raises(RuntimeError, match="(?s)exited before writing.*no-such-option"):
        cluster.start_controller_sync()
    assert cluster.controller is None and not my_ssh_processes()


@pytest.fixture(scope="module")
def _mpi_installed():
    if shutil.which("mpiexec") is None:
        pytest.fail("mpiexec is not on PATH: run `make install` (it installs openmpi-bin)")


def test_mpi_controller_runs_the_seed_flow_and_stops_clean(tmp_path, _mpi_installed):
    cluster = corral.Cluster(n=2, controller="mpi", engines="mpi", profile_dir=tmp_path / "profile",
                             cluster_id="mpic", engine_timeout=90)
    try:
        client = cluster.start_and_connect_sync()
        controller = cluster.controller
        mpiexec = psutil.Process(controller.pid)
        assert "mpiexec" in " ".join(mpiexec.cmdline()) or "mpirun" in " ".join(mpiexec.cmdline())
        rank = controller._rank()
        assert rank is not None and "controller" in psutil.Process(rank.pid).cmdline()
        seed_flow(client, 2)
        launcher = next(iter(cluster.engines.values()))
        pids = [controller.pid, rank.pid, launcher.mpiexec.pid, *(r.pid for r in launcher.local_ranks())]
    except Exception:
        print_logs(tmp_path)
        raise
    finally:
        cluster.stop_cluster_sync()
    wait_for(lambda: all(gone(p) for p in pids), 30, "mpiexec, the controller and the engines to exit")
    assert not cluster.client_file.exists() and not cluster.cluster_file.exists()


def test_engine_and_client_ports_reach_the_connection_files(tmp_path):
    import socket

    held = [socket.socket() for _ in range(16)]
    for s in held:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in held]
    for s in held:
        s.close()
    engine_ports, client_ports = ports[:9], ports[9:16]
    cluster = corral.Cluster(n=1, profile_dir=tmp_path / "profile", cluster_id="ports", controller_args=[
        "--engine-ports", ",".join(map(str, engine_ports)), "--client-ports", ",".join(map(str, client_ports))])
    with cluster as client:
        engine = json.loads(cluster.engine_file.read_text())
        info = json.loads(cluster.client_file.read_text())
        assert [engine[k] for k in ("registration", "control", "mux", "task", "iopub", "hb_ping", "hb_pong")] \
            == engine_ports[:7]
        assert engine["broadcast"] == engine_ports[7:9]
        assert [info[k] for k in ("control", "mux", "task", "iopub", "notification", "broadcast")] \
            == client_ports[:6]
        assert client[:].apply_sync(lambda: 42) == [42]


def test_cli_starts_an_mpi_controller_that_list_shows_and_stop_ends(tmp_path, _mpi_installed):
    """`corral cluster start --controller mpi --daemonize`, then `list` and `stop` from other
    processes, which know the controller only from the cluster file."""
    import os
    import subprocess

    profile = tmp_path / "ipython" / "profile_default"
    env = dict(os.environ, IPYTHONDIR=str(tmp_path / "ipython"))

    def corral_cmd(*args):
        return subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True, text=True,
                              timeout=120, env=env)

    started = corral_cmd("cluster", "start", "-n", "1", "--daemonize", "--cluster-id", "m",
                         "--controller", "mpi", "--controller-option", "mpi_args=[]")
    try:
        assert started.returncode == 0, started.stderr
        record = json.loads((profile / "security" / "cluster-m.json").read_text())
        assert record["controller"]["class"] == "mpi"
        mpiexec = record["controller"]["state"]["pid"]
        controller = corral.Cluster.from_file(profile_dir=profile, cluster_id="m").controller
        rank = controller._rank()
        assert rank is not None
        listing = corral_cmd("cluster", "list", "--profile-dir", str(profile)).stdout
        row = [line.split() for line in listing.splitlines() if line.split()[1:2] == ["m"]]
        assert row and row[0][2] == "running" and row[0][-1] == "mpi", listing
    finally:
        stopped = corral_cmd("cluster", "stop", "--cluster-id", "m")
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: gone(mpiexec) and gone(rank.pid), 30, "mpiexec and the controller to exit")
    assert not (profile / "security" / "cluster-m.json").exists()
