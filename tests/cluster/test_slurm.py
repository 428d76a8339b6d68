"""Engines started by `sbatch` on a real single-node Slurm (tests/slurm.py): the engines are
the job's `srun` steps and connect to a corral controller on 127.0.0.1; `stop` cancels the
job with `scancel` and leaves no job in `squeue` and no engine process."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

import corral
from cluster_processes import wait_for
from corral.cluster.batch import SlurmEngineSetLauncher


@pytest.fixture
def controller(tmp_path, slurm, request):
    """A corral controller on 127.0.0.1 (no engines: the tests start them through Slurm)."""
    cluster = corral.Cluster(profile_dir=tmp_path / "profile", cluster_id="slurm", engine_timeout=60)
    cluster.start_controller_sync()
    yield cluster
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(slurm.report())
        for log in sorted((tmp_path / "profile" / "log").glob("*")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
    cluster.stop_cluster_sync()


def _launcher(cluster, **options) -> SlurmEngineSetLauncher:
    return SlurmEngineSetLauncher(
        engine_file=cluster.engine_file, profile_dir=cluster.profile_dir,
        cluster_id=cluster.cluster_id, log_dir=cluster.profile_dir / "log", **options,
    )


def _engine_pids(engine_file: Path) -> list[int]:
    """Processes whose command line names this cluster's engine file: its engines."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # exited meanwhile
            continue
        if str(engine_file).encode() in argv and b"engine" in argv:
            pids.append(int(entry.name))
    return pids


def _assert_nothing_left(slurm, launcher) -> None:
    assert launcher.job_id not in slurm.jobs(), slurm.run("squeue").stdout
    assert not launcher.running()
    wait_for(lambda: not _engine_pids(launcher.engine_file), 30, "the engine processes to exit")


def simulation_loop(steps, pause):
    import time

    from corral.datapub import publish_data

    for i in range(steps):
        publish_data(dict(i=i))
        time.sleep(pause)
    return steps


def sleep_after_saying_so(seconds):
    import time

    from corral.datapub import publish_data

    publish_data(dict(sleeping=True))
    time.sleep(seconds)


def test_seed_flow_on_two_engines_started_by_sbatch(slurm, controller):
    launcher = _launcher(controller, detach=True)  # Cluster passes detach; a job is detached anyway
    launcher.environment = {"CORRAL_TEST_MARK": "from the launcher"}
    launcher.start(2)
    try:
        assert launcher.job_id in slurm.jobs()
        assert launcher.running()
        client = controller.connect_client_sync()
        client.wait_for_engines(2, timeout=60)
        # Both engines are steps of the job sbatch submitted, with the launcher's environment.
        env = client[:].apply_sync(lambda: [__import__("os").environ.get(k) for k in ("SLURM_JOB_ID", "CORRAL_TEST_MARK")])
        assert env == [[launcher.job_id, "from the launcher"]] * 2

        ar = client[:].apply_async(simulation_loop, 10, 0.2)
        seen = set()
        deadline = time.monotonic() + 30
        while not ar.ready() and time.monotonic() < deadline:
            seen.update(d.get("i") for d in ar.data)
            time.sleep(0.05)
        assert ar.get(timeout=30) == [10, 10]
        assert len(seen - {None}) >= 3, f"saw only {seen} while running"
        assert ar.data == [{"i": 9}, {"i": 9}]
    finally:
        launcher.stop()
    _assert_nothing_left(slurm, launcher)


def test_stop_from_a_record_cancels_the_job_and_leaves_no_engine(slurm, controller):
    """`corral cluster stop` stops a set another process started, from `to_dict`."""
    started = _launcher(controller)
    started.start(2)
    try:
        client = controller.connect_client_sync()
        client.wait_for_engines(2, timeout=60)
        assert len(_engine_pids(started.engine_file)) >= 2
        record = started.to_dict()
        assert record["kind"] == "slurm" and record["job_id"] == started.job_id
        restored = SlurmEngineSetLauncher.from_dict(record)
        assert restored.running()
        restored.stop()
        _assert_nothing_left(slurm, restored)
    finally:
        started.stop()


def test_signal_reaches_the_engines_through_scancel(slurm, controller):
    """SIGINT sent with `scancel --signal` interrupts the running task; the engines live on."""
    launcher = _launcher(controller)
    launcher.start(2)
    try:
        client = controller.connect_client_sync()
        client.wait_for_engines(2, timeout=60)
        ar = client[:].apply_async(sleep_after_saying_so, 60)
        wait_for(lambda: ar.data == [{"sleeping": True}] * 2, 30, "both engines to start the task")
        launcher.signal(signal.SIGINT)
        with pytest.raises(Exception) as excinfo:
            ar.get(timeout=30)
        assert "KeyboardInterrupt" in str(excinfo.value), excinfo.value
        assert client[:].apply_sync(lambda: 6 * 7) == [42, 42]
        assert launcher.running()
    finally:
        launcher.stop()
    _assert_nothing_left(slurm, launcher)


def test_options_become_sbatch_directives_slurm_accepts(slurm, controller):
    """Partition, time limit and an extra option reach sbatch, which runs the job."""
    launcher = _launcher(controller, queue="debug", timelimit="10:00", extra_options=["--job-name=corral-opts"])
    launcher.start(1)
    try:
        client = controller.connect_client_sync()
        client.wait_for_engines(1, timeout=60)
        shown = slurm.run("squeue", "-h", "-j", launcher.job_id, "-o", "%P %l %j").stdout.split()
        assert shown == ["debug", "10:00", "corral-opts"]
    finally:
        launcher.stop()
    _assert_nothing_left(slurm, launcher)


def test_a_failing_submission_says_what_sbatch_said(slurm, controller):
    launcher = _launcher(controller, queue="no-such-partition")
    with pytest.raises(RuntimeError, match="sbatch --parsable .* failed .*[Pp]artition"):
        launcher.start(1)
    assert not launcher.running()


def test_running_turns_false_when_the_job_ends_by_itself(slurm, controller):
    """Engines exit after their controller goes (its grace period); squeue then drops the
    job, and `running` (read from squeue) says so."""
    launcher = _launcher(controller)
    launcher.start(1)
    try:
        client = controller.connect_client_sync()
        client.wait_for_engines(1, timeout=60)
        client.close()
        controller.stop_controller_sync()
        wait_for(lambda: not launcher.running(), 60, "the job to end once its engine exited")
        _assert_nothing_left(slurm, launcher)
    finally:
        launcher.stop()


def test_stop_cancels_a_job_that_is_still_pending(slurm, controller):
    """More engines than the node has CPUs: Slurm accepts the job but leaves it PENDING
    (reason PartitionConfig) instead of refusing it; `running` counts it, `stop` cancels it."""
    launcher = _launcher(controller)
    launcher.start(slurm.cpus + 1)
    try:
        wait_for(lambda: slurm.run("squeue", "-h", "-j", launcher.job_id, "-o", "%T").stdout.strip() == "PENDING",
                 30, "the job to be pending")
        assert launcher.running()
    finally:
        launcher.stop()
    _assert_nothing_left(slurm, launcher)
