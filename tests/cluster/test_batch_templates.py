"""The PBS, SGE and LSF launchers' scripts and command lines, rendered without submitting.

None of these schedulers runs on the test machine: LSF is proprietary, and neither PBS
(OpenPBS, Torque) nor Grid Engine is set up by `make install` (Debian 12 does package Son of
Grid Engine 8.1.9 as gridengine-*; a real single-node SGE is left for later). So only what
corral itself produces is checked here, with no imitation scheduler: the job script, the argv
of each command, and the reading of each scheduler's documented output. Slurm's launcher
runs for real in test_slurm.py.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from corral.cluster.batch import (
    BatchEngineSetLauncher,
    LSFEngineSetLauncher,
    PBSEngineSetLauncher,
    SGEEngineSetLauncher,
    SlurmEngineSetLauncher,
)
from corral.cluster.launcher import find_engine_launcher

ENGINE = shlex.join([sys.executable, "-m", "corral", "engine", "--file", "/p/security/e.json", "--log-level", "warning"])


def make(cls, **options) -> BatchEngineSetLauncher:
    return cls(engine_file="/p/security/e.json", profile_dir="/p", cluster_id="abc", log_dir="/p/log", **options)


@pytest.mark.parametrize("name, cls", [
    ("slurm", SlurmEngineSetLauncher), ("pbs", PBSEngineSetLauncher),
    ("sge", SGEEngineSetLauncher), ("lsf", LSFEngineSetLauncher), ("PBS", PBSEngineSetLauncher),
])
def test_names_find_the_launchers(name, cls):
    assert find_engine_launcher(name) is cls


def test_pbs_default_script_is_a_job_array_with_the_options():
    launcher = make(PBSEngineSetLauncher, queue="long", account="proj", timelimit="1:00:00")
    assert launcher.render_script(3) == f"""\
#!/bin/sh
#PBS -V
#PBS -N corral-engine-abc
#PBS -t 1-3
#PBS -j oe
#PBS -o /p/log/corral-engines-abc-pbs.log
#PBS -q long
#PBS -A proj
#PBS -l walltime=1:00:00
{ENGINE}
"""
    assert launcher.submit_argv() == ["qsub", "/p/log/corral-engines-abc.pbs"]


def test_sge_default_script_is_a_job_array():
    launcher = make(SGEEngineSetLauncher, queue="all.q")
    assert launcher.render_script(2) == f"""\
#!/bin/sh
#$ -V
#$ -S /bin/sh
#$ -N corral-engine-abc
#$ -t 1-2
#$ -j y
#$ -o /p/log/corral-engines-abc-sge.log
#$ -q all.q
{ENGINE}
"""
    assert launcher.submit_argv() == ["qsub", "/p/log/corral-engines-abc.sge"]


def test_lsf_default_script_is_a_job_array_fed_to_bsub_on_stdin():
    launcher = make(LSFEngineSetLauncher, queue="normal", extra_options=["-R 'span[hosts=1]'"])
    assert launcher.render_script(4) == f"""\
#!/bin/sh
#BSUB -env all
#BSUB -J corral-engine-abc[1-4]
#BSUB -o /p/log/corral-engines-abc-lsf.log
#BSUB -e /p/log/corral-engines-abc-lsf.log
#BSUB -q normal
#BSUB -R 'span[hosts=1]'
{ENGINE}
"""
    assert launcher.submit_via_stdin and launcher.submit_argv() == ["bsub"]


def test_slurm_default_script_runs_n_srun_tasks():
    launcher = make(SlurmEngineSetLauncher, queue="debug", qos="low", timelimit="10:00",
                    extra_options=["--mem-per-cpu={literal braces}"])
    assert launcher.render_script(2) == f"""\
#!/bin/sh
#SBATCH --export=ALL
#SBATCH --job-name=corral-engine-abc
#SBATCH --ntasks=2
#SBATCH --output=/p/log/corral-engines-abc-slurm.log
#SBATCH --partition=debug
#SBATCH --qos=low
#SBATCH --time=10:00
#SBATCH --mem-per-cpu={{literal braces}}
srun {ENGINE}
"""


def test_a_user_template_gets_the_fields_and_namespace(tmp_path):
    template = tmp_path / "engines.sh"
    template.write_text(
        "#!/bin/bash\n#PBS -l nodes={nodes}:ppn={n}\n#PBS -q {queue}\n"
        "cd {profile_dir} && mpiexec -n {n} {program_and_args} # {cluster_id}\n"
    )
    launcher = make(PBSEngineSetLauncher, queue="fast", batch_template_file=str(template), namespace={"nodes": 2})
    assert launcher.render_script(8) == (
        "#!/bin/bash\n#PBS -l nodes=2:ppn=8\n#PBS -q fast\n"
        f"cd /p && mpiexec -n 8 {ENGINE} # abc\n"
    )


def test_an_unknown_template_field_says_which_fields_exist():
    launcher = make(SlurmEngineSetLauncher, batch_template="#!/bin/sh\nsrun {engine_cmd}\n")
    with pytest.raises(ValueError, match=r"\{engine_cmd\}.*'engine_command'.*namespace"):
        launcher.render_script(1)


@pytest.mark.parametrize("cls, option", [(PBSEngineSetLauncher, "qos"), (SlurmEngineSetLauncher, "partition")])
def test_an_unknown_option_is_refused_with_the_known_ones(cls, option):
    with pytest.raises(TypeError, match=rf"unknown option\(s\) \['{option}'\].*'queue'"):
        make(cls, **{option: "x"})


def test_commands_can_be_replaced_as_ipyparallel_configures_them():
    launcher = make(PBSEngineSetLauncher, submit_command="qsub -W group_list=x", delete_command=["qdel", "-W", "force"])
    assert launcher.submit_argv() == ["qsub", "-W", "group_list=x", "/p/log/corral-engines-abc.pbs"]
    assert launcher.delete_command == ["qdel", "-W", "force"]


@pytest.mark.parametrize("cls, output, job_id", [
    (SlurmEngineSetLauncher, "4242\n", "4242"),
    (SlurmEngineSetLauncher, "4242;cluster2\n", "4242"),
    (PBSEngineSetLauncher, "123[].pbs-server.example.org\n", "123[].pbs-server.example.org"),
    (SGEEngineSetLauncher, 'Your job-array 77.1-4:1 ("corral-engine-abc") has been submitted\n', "77"),
    (LSFEngineSetLauncher, "Job <5150> is submitted to queue <normal>.\n", "5150"),
])
def test_the_job_id_regexp_reads_the_submit_commands_output(cls, output, job_id):
    import re

    assert re.search(cls.job_id_regexp, output).group(0) == job_id


def _result(returncode: int, stdout: str = "", stderr: str = "") -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess([], returncode, stdout, stderr)


@pytest.mark.parametrize("cls, result, listed", [
    (SlurmEngineSetLauncher, _result(0, "RUNNING\n"), True),
    (SlurmEngineSetLauncher, _result(0, "PENDING\n"), True),
    (SlurmEngineSetLauncher, _result(0, "COMPLETED\n"), False),
    (SlurmEngineSetLauncher, _result(0, ""), False),
    (SlurmEngineSetLauncher, _result(1, "", "slurm_load_jobs error: Invalid job id specified"), False),
    (PBSEngineSetLauncher, _result(0, "Job id  Name  User  Time Use S Queue\n----\n123[].srv  corral  me  0  R batch\n"), True),
    (PBSEngineSetLauncher, _result(0, "Job id  Name  User  Time Use S Queue\n----\n123[].srv  corral  me  0  C batch\n"), False),
    (PBSEngineSetLauncher, _result(153, "", "qstat: Unknown Job Id 123[].srv"), False),
    (SGEEngineSetLauncher, _result(0, "job_number: 77\n"), True),
    (SGEEngineSetLauncher, _result(1, "Following jobs do not exist:\n77\n"), False),
    (LSFEngineSetLauncher, _result(0, "RUN\nPEND\n"), True),
    (LSFEngineSetLauncher, _result(0, "DONE\nEXIT\n"), False),
    (LSFEngineSetLauncher, _result(255, "", "Job <5150> is not found"), False),
])
def test_running_reads_the_status_commands_output(cls, result, listed):
    assert make(cls)._job_listed(result) is listed


def test_a_slurm_status_error_is_not_taken_for_a_finished_job():
    with pytest.raises(RuntimeError, match="squeue failed.*Unable to contact"):
        make(SlurmEngineSetLauncher)._job_listed(_result(1, "", "Unable to contact slurm controller"))


def test_sge_signal_says_grid_engine_has_no_signal_command():
    launcher = make(SGEEngineSetLauncher)
    launcher.job_id = "77"
    with pytest.raises(NotImplementedError, match="signal_command"):
        launcher.signal(2)


def test_a_missing_scheduler_command_says_what_is_needed(tmp_path):
    launcher = make(PBSEngineSetLauncher, submit_command=["corral-no-such-qsub"])
    launcher.log_dir = tmp_path
    launcher.script_file = tmp_path / "engines.pbs"
    with pytest.raises(RuntimeError, match="corral-no-such-qsub is not on PATH.*PBS"):
        launcher.start(1)


def test_to_dict_from_dict_keeps_the_job_and_options(tmp_path):
    template = tmp_path / "engines.lsf"
    template.write_text("#!/bin/sh\n{engine_command}\n")
    launcher = make(LSFEngineSetLauncher, queue="normal", batch_template_file=template)
    launcher.job_id, launcher.n = "5150", 4
    restored = LSFEngineSetLauncher.from_dict(json.loads(json.dumps(launcher.to_dict())))
    assert (restored.job_id, restored.n) == ("5150", 4)
    assert restored.options == {"queue": "normal", "batch_template_file": str(template)}
    assert restored.engine_file == Path("/p/security/e.json")
    with pytest.raises(ValueError, match="'lsf' engine set, not 'pbs'"):
        PBSEngineSetLauncher.from_dict(launcher.to_dict())


# -- the controller's job (Cluster(controller='pbs'|'sge'|'lsf'|'slurm')) -------------------

CONTROLLER = shlex.join([sys.executable, "-m", "corral", "controller", "--profile-dir", "/p", "--cluster-id", "abc",
                         "--ip", "*", "--location", "head"])


def make_controller(kind: str, **options):
    from corral.cluster.controller_launcher import find_controller_launcher

    return find_controller_launcher(kind)(profile_dir="/p", cluster_id="abc", log_dir="/p/log",
                                          controller_args=["--ip", "*", "--location", "head"], **options)


def test_pbs_controller_script_is_one_job_running_the_controller():
    launcher = make_controller("pbs", queue="long", timelimit="2:00:00")
    assert launcher.render_script() == f"""\
#!/bin/sh
#PBS -V
#PBS -N corral-controller-abc
#PBS -j oe
#PBS -o /p/log/corral-controller-abc-pbs.log
#PBS -q long
#PBS -l walltime=2:00:00
{CONTROLLER}
"""
    assert launcher.job.submit_argv() == ["qsub", "/p/log/corral-controller-abc.pbs"]


def test_sge_controller_script_has_no_job_array():
    launcher = make_controller("sge", queue="all.q")
    assert launcher.render_script() == f"""\
#!/bin/sh
#$ -V
#$ -S /bin/sh
#$ -N corral-controller-abc
#$ -j y
#$ -o /p/log/corral-controller-abc-sge.log
#$ -q all.q
{CONTROLLER}
"""


def test_lsf_controller_script_goes_to_bsub_on_stdin():
    launcher = make_controller("lsf", account="proj")
    assert launcher.render_script() == f"""\
#!/bin/sh
#BSUB -env all
#BSUB -J corral-controller-abc
#BSUB -o /p/log/corral-controller-abc-lsf.log
#BSUB -e /p/log/corral-controller-abc-lsf.log
#BSUB -P proj
{CONTROLLER}
"""
    assert launcher.job.submit_argv() == ["bsub"]


def test_slurm_controller_script_is_one_task_without_srun():
    launcher = make_controller("slurm", queue="debug", timelimit="30:00")
    assert launcher.render_script() == f"""\
#!/bin/sh
#SBATCH --export=ALL
#SBATCH --job-name=corral-controller-abc
#SBATCH --ntasks=1
#SBATCH --output=/p/log/corral-controller-abc-slurm.log
#SBATCH --partition=debug
#SBATCH --time=30:00
{CONTROLLER}
"""


def test_a_controller_template_gets_controller_command_and_program_and_args():
    launcher = make_controller("pbs", batch_template="#!/bin/sh\n#PBS -q {queue}\n{controller_command}\n# {program_and_args}\n",
                               queue="q1")
    assert launcher.render_script() == f"#!/bin/sh\n#PBS -q q1\n{CONTROLLER}\n# {CONTROLLER}\n"
    with pytest.raises(ValueError, match=r"\{engine_command\}.*'controller_command'"):
        make_controller("pbs", batch_template="{engine_command}\n").render_script()


def test_controller_record_round_trip_keeps_job_and_options():
    from corral.cluster.controller_launcher import find_controller_launcher

    launcher = make_controller("lsf", queue="normal")
    launcher.job.job_id = "5150"
    record = json.loads(json.dumps(launcher.to_dict()))
    again = find_controller_launcher(record["kind"]).from_dict(record)
    assert again.job_id == "5150" and again.job.options["queue"] == "normal"
    assert again.render_script() == launcher.render_script()
