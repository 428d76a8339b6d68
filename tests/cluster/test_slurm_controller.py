"""The controller as a Slurm job on a real single-node Slurm (tests/slurm.py):
`Cluster(controller='slurm')` submits it with `sbatch`, reads the connection files it writes
into the profile (the shared file system), runs the seed flow on an engine that is a Slurm
job too, and `stop` leaves no job in `squeue` and no process; a controller job cancelled
behind the cluster's back is reported (by `Cluster` and `corral cluster list`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cloudpickle
import psutil
import pytest

import corral
from cluster_processes import wait_for
from corral.cluster.command import state
import test_controller_launchers
from test_controller_launchers import print_logs, seed_flow

# seed_flow's task function lives in that module, which engines cannot import
cloudpickle.register_pickle_by_value(test_controller_launchers)


def processes_naming(path: Path) -> list[int]:
    """Processes whose command line names `path` (this cluster's profile)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(str(path) in arg for arg in proc.info["cmdline"] or []):
            found.append(proc.pid)
    return found


def test_slurm_controller_and_engine_run_the_seed_flow_and_stop_clean(slurm, tmp_path):
    profile = tmp_path / "profile"
    # The node has os.cpu_count() CPUs; the controller's job takes one, the engine another.
    cluster = corral.Cluster(n=1, controller="slurm", engines="slurm", profile_dir=profile,
                             cluster_id="slurmc", engine_timeout=90, controller_timeout=90,
                             controller_launcher_options={"timelimit": "30:00"})
    try:
        client = cluster.start_and_connect_sync()
        job = cluster.controller.job_id
        assert job in slurm.jobs()
        shown = slurm.run("squeue", "-h", "-j", job, "-o", "%j %l").stdout.split()
        assert shown == ["corral-controller-slurmc", "30:00"]
        # the controller is the job's process (its environment says so)
        (ctl_pid,) = [p for p in processes_naming(profile) if "controller" in psutil.Process(p).cmdline()]
        assert psutil.Process(ctl_pid).environ().get("SLURM_JOB_ID") == job
        seed_flow(client, 1)
    except Exception:
        print(slurm.report())
        print_logs(tmp_path)
        raise
    finally:
        cluster.stop_cluster_sync()
    assert not slurm.jobs(), slurm.run("squeue").stdout
    wait_for(lambda: not processes_naming(profile), 30, "the controller and engine processes to exit")
    assert not cluster.client_file.exists() and not cluster.cluster_file.exists()


def test_a_cancelled_controller_job_is_reported(slurm, tmp_path):
    profile = tmp_path / "profile"
    cluster = corral.Cluster(controller="slurm", profile_dir=profile, cluster_id="gone",
                             controller_timeout=90)
    try:
        cluster.start_controller_sync()
        client = cluster.connect_client_sync()
        job = cluster.controller.job_id
        assert state(corral.Cluster.from_file(cluster.cluster_file)) == "running"
        slurm.run("scancel", job)
        wait_for(lambda: not cluster.controller.running(), 60, "Slurm to end the controller's job")
        # what `corral cluster list` shows, from the cluster file another process reads
        assert state(corral.Cluster.from_file(cluster.cluster_file)) == "dead"
        listing = subprocess.run([sys.executable, "-m", "corral", "cluster", "list", "--profile-dir", str(profile)],
                                 capture_output=True, text=True, timeout=60).stdout
        row = [line.split() for line in listing.splitlines() if line.split()[1:2] == ["gone"]]
        assert row and row[0][2] == "dead" and row[0][-1] == "slurm", listing
        # waiting for engines fails at once, saying the controller stopped
        with pytest.raises(RuntimeError, match="Slurm job .* has stopped"):
            cluster.wait_for_engines_sync(client, 1)
    except Exception:
        print(slurm.report())
        print_logs(tmp_path)
        raise
    finally:
        cluster.stop_cluster_sync()
    assert not slurm.jobs()
    wait_for(lambda: not processes_naming(profile), 30, "the controller to exit")
