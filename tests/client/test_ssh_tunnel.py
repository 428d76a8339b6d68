"""`Client(sshserver=...)` through a real OpenSSH server (tests/sshd.py) on 127.0.0.1.

Everything here is on one machine, so the client COULD reach the controller directly; what
these tests prove is that it does not: every TCP connection the client process holds goes
to the ssh process's local forwards, the sshd log shows a forwarded channel to each of the
controller's ports, and killing the ssh process loses the controller.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import corral
from cluster_processes import living_children, wait_for
from corral.client.tunnel import CHANNELS, SSHTunnelError

N = 2


@pytest.fixture
def cluster(tmp_path):
    """A corral controller and engines on 127.0.0.1, with no client in this process."""
    cluster = corral.Cluster(n=N, profile_dir=tmp_path / "profile", cluster_id="ssh",
                             engine_timeout=60)
    try:
        cluster.start_cluster_sync()
        yield cluster
    finally:
        cluster.stop_cluster_sync()


@pytest.fixture
def ssh_on_path(sshd, monkeypatch):
    """`ssh` on PATH uses the test server's keys and known_hosts (as ~/.ssh/config would)."""
    monkeypatch.setenv("PATH", f"{sshd.bin}{os.pathsep}{os.environ['PATH']}")
    return sshd


def controller_ports(client_file) -> dict[str, int]:
    info = json.loads(Path(client_file).read_text())
    return {channel: int(info[channel]) for channel in CHANNELS if info.get(channel) is not None}


def tcp_peers() -> set[int]:
    """Remote ports of this process's established TCP connections."""
    return {c.raddr.port for c in psutil.Process().net_connections("tcp")
            if c.raddr and c.status == psutil.CONN_ESTABLISHED}



def simulation(steps):
    import time

    from corral.datapub import publish_data

    for i in range(steps):
        publish_data({"i": i})
        time.sleep(0.05)
    return steps


def test_every_channel_goes_through_the_tunnel(cluster, ssh_on_path):
    sshd = ssh_on_path
    ports = controller_ports(cluster.client_file)
    client = corral.Client(cluster.client_file, sshserver=sshd.address, sshkey=str(sshd.client_key),
                           timeout=20)
    try:
        client.wait_for_engines(N, timeout=30)
        tunnel = client._tunnel
        assert tunnel is not None and tunnel.running()
        assert sorted(tunnel.local) == sorted(set(ports.values()))

        # apply, published data and results through the tunnel
        assert client[:].apply_sync(lambda x: x * 2, 21) == [42] * N
        ar = client[:].apply_async(simulation, 20)
        assert ar.get(timeout=30) == [20] * N
        assert [d["i"] for d in ar.data] == [19] * N
        lview = client.load_balanced_view()
        assert lview.map_sync(lambda x: x + 1, range(8)) == list(range(1, 9))

        # sshd forwarded a channel to each of the controller's ports the client uses (a
        # corral client takes its IOPub from corral_iopub, not from the stock PUB)...
        used = set(ports.values()) - ({ports["iopub"]} if "corral_iopub" in ports else set())
        assert set(sshd.forwarded_targets()) >= used
        # ...and this process talks only to the tunnel's local ends, never to the controller
        peers = tcp_peers()
        assert peers and peers <= set(tunnel.local.values()), (peers, tunnel.local)
        assert not peers & set(ports.values())

        # without the tunnel the controller is gone for this client
        os.kill(tunnel.pid, signal.SIGKILL)
        with pytest.raises(corral.error.ControllerLost):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                client[:].apply_sync(lambda: 1)
                time.sleep(0.2)
    finally:
        client.close()
    assert not client._tunnel.running()


def test_close_ends_the_tunnel(cluster, ssh_on_path):
    sshd = ssh_on_path
    client = corral.Client(cluster.client_file, sshserver=sshd.address, timeout=20)
    client.wait_for_engines(N, timeout=30)
    pid = client._tunnel.pid
    assert psutil.Process(pid).name() == "ssh"
    client.close()
    assert not psutil.pid_exists(pid)


def test_sshserver_written_in_the_connection_file_is_used(cluster, ssh_on_path, tmp_path):
    """ipcontroller --ssh writes `ssh` into the client file; a client elsewhere uses it."""
    sshd = ssh_on_path
    info = json.loads(Path(cluster.client_file).read_text())
    info.update(ssh=sshd.address, location="controller-host.invalid")
    remote_file = tmp_path / "from-elsewhere.json"
    remote_file.write_text(json.dumps(info))
    with corral.Client(str(remote_file), timeout=20) as client:
        assert client._tunnel is not None and client._tunnel.server == sshd.address
        client.wait_for_engines(N, timeout=30)
        assert client[:].apply_sync(lambda: 7) == [7] * N
    # as ipyparallel: on the controller's own machine (loopback interface, location here)
    # the file's `ssh` is not needed and not used
    info.update(location="127.0.0.1")
    remote_file.write_text(json.dumps(info))
    with corral.Client(str(remote_file), timeout=20) as client:
        assert client._tunnel is None
        client.wait_for_engines(N, timeout=30)


def test_a_refused_login_says_what_to_do_and_leaves_no_ssh(cluster, ssh_on_path):
    sshd = ssh_on_path
    before = living_children()
    with pytest.raises(SSHTunnelError) as info:
        corral.Client(cluster.client_file, sshserver=f"nosuchuser@{sshd.host}:{sshd.port}",
                      timeout=10)
    message = str(info.value)
    assert "Permission denied" in message and "without a password" in message
    after = living_children("ssh")
    assert not after - before



def test_a_killed_client_leaves_no_ssh(cluster, ssh_on_path, tmp_path):
    """SIGKILL runs no Python cleanup: the tunnel's watchdog still ends ssh."""
    sshd = ssh_on_path
    script = tmp_path / "client.py"
    script.write_text(
        "import sys, time, corral\n"
        f"c = corral.Client({str(cluster.client_file)!r}, sshserver={sshd.address!r}, timeout=20)\n"
        "c.wait_for_engines(1, timeout=30)\n"
        "print(c._tunnel.pid, flush=True)\n"
        "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        ssh_pid = int(proc.stdout.readline())
        assert psutil.Process(ssh_pid).name() == "ssh"
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
    wait_for(lambda: _gone(ssh_pid), 10, "the dead client's ssh to exit")


def _gone(pid: int) -> bool:
    """No such process, or a zombie. It may exit between the two checks: gone too."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_which_server_and_address_are_used():
    """ipyparallel's rules: sshserver= wins; the file's `ssh` unless the controller listens
    on loopback of this machine; sshkey= alone means the controller's own host."""
    from corral.client.arguments import ssh_server_for
    from corral.client.tunnel import remote_ip, split_server

    here = {"interface": "tcp://127.0.0.1", "location": "127.0.0.1", "ssh": "me@gw"}
    assert ssh_server_for(here, None, None) is None
    assert ssh_server_for(here, "you@other:2222", None) == "you@other:2222"
    assert ssh_server_for(dict(here, location="far.invalid"), None, None) == "me@gw"
    assert ssh_server_for({"interface": "tcp://10.1.2.3", "ssh": "me@gw"}, None, None) == "me@gw"
    assert ssh_server_for({"interface": "tcp://10.1.2.3", "ssh": ""}, None, None) is None
    assert ssh_server_for({"interface": "tcp://10.1.2.3"}, None, "~/.ssh/id") == "10.1.2.3"
    assert split_server("me@host:2222") == ("me@host", "2222")
    assert split_server("host") == ("host", None)
    with pytest.raises(ValueError, match="port number"):
        split_server("me@host:ssh")
    assert remote_ip("tcp://0.0.0.0", None) == "127.0.0.1"
    assert remote_ip("tcp://0.0.0.0", "ctl.example") == "ctl.example"
    assert remote_ip("tcp://10.1.2.3", "ctl.example") == "10.1.2.3"


def stock_simulation(steps):
    import time

    from ipyparallel.datapub import publish_data

    for i in range(steps):
        publish_data({"i": i})
        time.sleep(0.05)
    return steps


def test_through_the_tunnel_to_a_stock_controller(fresh_stock, ssh_on_path):
    """corral's client on an existing ipyparallel cluster, reached through SSH."""
    sshd = ssh_on_path
    client_file = fresh_stock.profile_dir / "security" / "ipcontroller-client.json"
    ports = controller_ports(client_file)
    with corral.Client(str(client_file), sshserver=sshd.address, timeout=30) as client:
        assert client._tunnel is not None
        client.wait_for_engines(2, timeout=60)
        ar = client[:].apply_async(stock_simulation, 10)
        assert ar.get(timeout=60) == [10, 10]
        assert [d["i"] for d in ar.data] == [9, 9]
        assert set(sshd.forwarded_targets()) >= set(ports.values())
