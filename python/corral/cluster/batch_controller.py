"""The controller as a batch job: `Cluster(controller='slurm'|'pbs'|'sge'|'lsf')`.

The job script comes from the same template mechanism as the engines' jobs
(`corral.cluster.batch`): the same options (`queue`, `account`, `timelimit`, `qos`,
`extra_options`, `batch_template`, `namespace`, the scheduler commands), a default script
per scheduler with one task that runs `{controller_command}` (also `{program_and_args}`).
The controller writes its connection files into the profile, which the submitting host
reads on the shared file system; it binds to `Cluster(controller_ip=...)` and advertises
`controller_location`, which engines on other nodes need (e.g. `controller_ip='*'`).
`stop` cancels the job and waits until the scheduler no longer lists it; a job that ends
by itself (cancelled, time limit) makes `running()` false, which `corral cluster list`
reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from corral.cluster import batch
from corral.cluster.controller_launcher import ControllerLauncher


class _ControllerJob:
    """Mixed into a scheduler's engine-job class: one task running the controller."""

    role = "controller"
    default_body = "{controller_command}\n"

    def __init__(self, *, controller_command: list[str], **kwargs):
        self._controller_command = controller_command
        super().__init__(**kwargs)

    def program(self) -> list[str]:
        return self._controller_command

    def context(self, n: int) -> dict:
        fields = super().context(n)
        fields["controller_command"] = fields.pop("engine_command")
        return fields


class SlurmControllerJob(_ControllerJob, batch.SlurmEngineSetLauncher):
    default_header = ("#!/bin/sh\n#SBATCH --export=ALL\n#SBATCH --job-name=corral-controller-{cluster_id}\n"
                      "#SBATCH --ntasks=1")


class PBSControllerJob(_ControllerJob, batch.PBSEngineSetLauncher):
    default_header = "#!/bin/sh\n#PBS -V\n#PBS -N corral-controller-{cluster_id}"


class SGEControllerJob(_ControllerJob, batch.SGEEngineSetLauncher):
    default_header = "#!/bin/sh\n#$ -V\n#$ -S /bin/sh\n#$ -N corral-controller-{cluster_id}"


class LSFControllerJob(_ControllerJob, batch.LSFEngineSetLauncher):
    default_header = "#!/bin/sh\n#BSUB -env all\n#BSUB -J corral-controller-{cluster_id}"


class BatchControllerLauncher(ControllerLauncher):
    """A controller in a one-task job; `controller_launcher_options` are the batch
    options listed in `corral.cluster.batch.BatchEngineSetLauncher`."""

    job_class: ClassVar[type]
    #: Checking costs a scheduler command.
    poll_interval = 0.2

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.job = self.job_class(
            controller_command=self.controller_command(),
            engine_file=self.profile_dir / "security" / "unused",  # the job runs no engine
            profile_dir=self.profile_dir, cluster_id=self.cluster_id, log_dir=self.log_dir,
            **self.options,
        )

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def render_script(self) -> str:
        return self.job.render_script(1)

    def start(self) -> None:
        self.job.start(1)

    def stop(self, timeout: float = 5.0) -> None:
        self.job.stop(timeout)

    def signal(self, sig: int) -> None:
        self.job.signal(sig)

    def running(self) -> bool:
        return self.job.running()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = Path(self.job.output_file).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        return f"{self.job.scheduler} job {self.job_id or '(not submitted)'}"

    def to_dict(self) -> dict:
        return {**self.base_record(), "options": self.job.to_dict()["options"], "job_id": self.job_id}

    @classmethod
    def from_dict(cls, record: dict) -> "BatchControllerLauncher":
        self = cls(profile_dir=record["profile_dir"], cluster_id=record.get("cluster_id", ""),
                   log_dir=record["log_dir"], controller_args=record.get("controller_args", ()),
                   **record.get("options", {}))
        self.job.job_id = record.get("job_id", "")
        self.job.n = 1 if self.job.job_id else 0
        return self


class SlurmControllerLauncher(BatchControllerLauncher):
    kind = "slurm"
    job_class = SlurmControllerJob


class PBSControllerLauncher(BatchControllerLauncher):
    kind = "pbs"
    job_class = PBSControllerJob


class SGEControllerLauncher(BatchControllerLauncher):
    kind = "sge"
    job_class = SGEControllerJob


class LSFControllerLauncher(BatchControllerLauncher):
    kind = "lsf"
    job_class = LSFControllerJob
