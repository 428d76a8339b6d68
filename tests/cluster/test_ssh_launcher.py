"""The SSH engine launcher through a real OpenSSH server (tests/sshd.py) on 127.0.0.1: the
connection file goes over scp, engines start over ssh (not as children of this process),
and stop leaves no engine and no ssh process behind."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

import corral
from cluster_processes import living_children, wait_for
from corral.cluster.launcher import find_engine_launcher
from corral.cluster.ssh import SSHEngineSetLauncher, SSHLaunchError, split_host

N = 2


@pytest.fixture
def controller(tmp_path):
    cluster = corral.Cluster(profile_dir=tmp_path / "profile", cluster_id="ssh", engine_timeout=60)
    try:
        cluster.start_controller_sync()
        yield cluster
    finally:
        cluster.stop_cluster_sync()


@pytest.fixture
def launchers():
    """Every launcher a test makes is stopped at teardown, even when the test fails."""
    made = []
    yield made
    for launcher in made:
        try:
            launcher.stop()
        except SSHLaunchError as e:
            print(f"teardown: {e}")


def make_launcher(cluster, sshd, tmp_path, engines, **options) -> SSHEngineSetLauncher:
    return SSHEngineSetLauncher(
        engine_file=cluster.engine_file, profile_dir=cluster.profile_dir,
        cluster_id=cluster.cluster_id, log_dir=cluster.profile_dir / "log",
        engines=engines, ssh_args=sshd.ssh_args, scp_args=sshd.ssh_args,
        remote_python=sys.executable,
        # a profile folder of its own on the "remote" host, so the file really is copied
        remote_profile_dir=str(tmp_path / "remote-profile"), **options,
    )


def engine_pids(client) -> list[int]:
    import os

    return client[:].apply_sync(os.getpid)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True



def simulation_loop(steps):
    import time

    from corral.datapub import publish_data

    for i in range(steps):
        publish_data({"i": i})
        time.sleep(0.1)
    return steps


def my_ssh_processes() -> set[int]:
    return living_children("ssh", "scp")


def test_seed_flow_on_engines_started_over_ssh(controller, sshd, tmp_path, launchers):
    launcher = make_launcher(controller, sshd, tmp_path, {sshd.address: N})
    launchers.append(launcher)
    launcher.start()  # no n: as many as `engines` lists
    assert launcher.n == N
    remote_file = tmp_path / "remote-profile" / "security" / controller.engine_file.name
    assert json.loads(remote_file.read_text()) == json.loads(controller.engine_file.read_text())

    client = controller.connect_client_sync()
    try:
        client.wait_for_engines(N, timeout=60)
    except TimeoutError:
        print(launcher.remote_log_tail())
        raise
    pids = engine_pids(client)
    # the engines are the processes the launcher recorded, started in sessions of this sshd
    assert sorted(pids) == sorted(launcher.started[0].pids)
    for pid in pids:
        connection = psutil.Process(pid).environ().get("SSH_CONNECTION", "")
        assert connection.endswith(f" {sshd.port}"), (pid, connection)

    # the seed flow: published data live while the task runs, final when get() returns
    ar = client[:].apply_async(simulation_loop, 30)
    seen = set()
    while not ar.ready():
        seen.update(d.get("i") for d in ar.data if d)
        time.sleep(0.05)
    assert ar.get(timeout=60) == [30] * N
    assert [d["i"] for d in ar.data] == [29] * N
    assert len(seen - {None, 29}) >= 3, f"ar.data was not live while the task ran: {seen}"

    assert launcher.running()
    launcher.stop()
    assert all(gone(pid) for pid in pids)
    assert not launcher.running()
    assert not remote_file.exists(), "the copied connection file (it holds the key) stays"
    assert not my_ssh_processes()
    # sshd's per-connection processes are gone too: nothing stays connected
    wait_for(lambda: not psutil.Process(sshd.process.pid).children(), 10, "sshd sessions to end")
    wait_for(lambda: len(client.ids) == 0, 30, "the controller to see the engines go")


def test_to_dict_from_dict_signals_and_stops_the_set(controller, sshd, tmp_path, launchers):
    # ipyparallel's dict form, with per-host settings
    engines = {sshd.address: {"n": 1}, f"{sshd.host}:{sshd.port}": 3}  # the login user by default
    launcher = make_launcher(controller, sshd, tmp_path, engines)
    launchers.append(launcher)
    launcher.start(3)  # an upper limit, as in ipyparallel: 1 + 2
    assert launcher.n == 3 and [len(hs.pids) for hs in launcher.started] == [1, 2]
    client = controller.connect_client_sync()
    client.wait_for_engines(3, timeout=60)
    pids = [pid for hs in launcher.started for pid in hs.pids]

    # as `corral cluster stop` would: rebuilt from its JSON record in another object
    record = json.loads(json.dumps(launcher.to_dict()))
    again = find_engine_launcher(record["kind"]).from_dict(record)
    assert again.running()
    again.signal(signal.SIGSTOP)
    wait_for(lambda: all(psutil.Process(p).status() == psutil.STATUS_STOPPED for p in pids),
               10, "SIGSTOP to reach every engine")
    again.signal(signal.SIGCONT)
    wait_for(lambda: all(psutil.Process(p).status() != psutil.STATUS_STOPPED for p in pids),
               10, "SIGCONT to reach every engine")
    assert sorted(engine_pids(client)) == sorted(pids)
    again.stop()
    assert all(gone(pid) for pid in pids)
    assert not again.running() and not launcher.running()
    assert not my_ssh_processes()


def test_a_refused_login_is_an_error_with_ssh_output(controller, sshd, tmp_path):
    launcher = make_launcher(controller, sshd, tmp_path, {f"nosuchuser@{sshd.host}:{sshd.port}": 1})
    with pytest.raises(SSHLaunchError, match="Permission denied"):
        launcher.start(1)
    assert launcher.n == 0 and not my_ssh_processes()


def test_options_are_checked(controller, sshd, tmp_path):
    with pytest.raises(ValueError, match="engines="):
        make_launcher(controller, sshd, tmp_path, {}).start(1)
    with pytest.raises(ValueError, match="unknown settings"):
        make_launcher(controller, sshd, tmp_path, {"host": {"n": 1, "cores": 4}})
    with pytest.raises(ValueError, match="port number"):
        split_host("user@host:ssh")
    assert split_host("me@example.org:2222") == ("me@example.org", "2222")
    assert split_host("example.org") == ("example.org", None)
    assert Path(make_launcher(controller, sshd, tmp_path, {"h": 1}).remote_profile_dir).is_absolute()
