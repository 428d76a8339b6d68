"""`Cluster(engines='ssh'|'slurm')`: the SSH and Slurm launchers chosen by name through the
Cluster API, as ipyparallel users write it, on the real sshd and single-node Slurm the other
launcher tests use. Stopping the cluster leaves no engine (and no job) behind."""

from __future__ import annotations

import os
import sys

import pytest

import corral
from cluster_processes import wait_for


def engine_processes(engine_file) -> list[int]:
    """Processes whose command line names this cluster's engine file."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"engine" in argv and any(str(engine_file).encode() in a for a in argv):
            found.append(int(entry.name))
    return found


def published_steps(steps):
    from corral.datapub import publish_data

    for i in range(steps):
        publish_data({"i": i})
    return steps


def run_and_stop(cluster, n):
    client = cluster.start_and_connect_sync()
    try:
        assert len(client.ids) == n
        ar = client[:].apply_async(published_steps, 5)
        assert ar.get(timeout=60) == [5] * n
        assert [d["i"] for d in ar.data] == [4] * n
    finally:
        engine_file = cluster.engine_file
        cluster.stop_cluster_sync()
    wait_for(lambda: not engine_processes(engine_file), 30, "the engines to exit")


def test_engines_ssh_by_name(tmp_path, sshd):
    cluster = corral.Cluster(
        n=2, engines="ssh", profile_dir=tmp_path / "profile", cluster_id="byname-ssh",
        engine_timeout=60,
        engine_launcher_options={
            "engines": {sshd.address: 2}, "ssh_args": sshd.ssh_args, "scp_args": sshd.ssh_args,
            "remote_python": sys.executable,
            "remote_profile_dir": str(tmp_path / "remote-profile"),
        },
    )
    run_and_stop(cluster, 2)


def test_engines_slurm_by_name(tmp_path, slurm):
    cluster = corral.Cluster(n=2, engines="slurm", profile_dir=tmp_path / "profile",
                             cluster_id="byname-slurm", engine_timeout=60)
    run_and_stop(cluster, 2)
    wait_for(lambda: not slurm.jobs(), 30, "Slurm to list no job")
