"""Engines as a batch scheduler's job: Slurm, PBS, SGE and LSF through one template mechanism.

`start` renders a job script from a template and submits it (`sbatch`, `qsub`, `bsub`);
the job id is parsed from the submit command's output and is all that `stop` (cancel the
job, then wait until the scheduler no longer lists it), `signal` and `running` need, so a
set started by one process can be stopped by another from `to_dict`.

Templates use `str.format` fields: `{n}`, `{engine_command}` (ipyparallel's name
`{program_and_args}` works too), `{profile_dir}`, `{cluster_id}`, `{output_file}`, the
options `{queue}`, `{account}`, `{timelimit}` (and `{qos}` for Slurm), and any key of
`namespace`. Without a `batch_template` the scheduler's default is used, with a directive
added for each option that is set and one per `extra_options` entry, as ipyparallel does.
"""

from __future__ import annotations

import os
import re
import shlex
import signal as signal_module
import subprocess
import time
from pathlib import Path
from typing import ClassVar

from corral.cluster.launcher import EngineSetLauncher

#: How long a scheduler command may take before the launcher gives up on it.
COMMAND_TIMEOUT = 60.0


class BatchEngineSetLauncher(EngineSetLauncher):
    """One batch job running `n` engines. Subclasses give the scheduler's commands,
    directive syntax and default template; options are keyword arguments:

    queue, account, timelimit, qos (Slurm): scheduler options added as directives;
    extra_options: more directives' arguments, e.g. `["--mem=2G"]`;
    batch_template / batch_template_file: a script template replacing the default;
    namespace: extra template fields;
    submit_command, delete_command, signal_command, status_command: the commands as lists;
    job_id_regexp: finds the job id in the submit command's output;
    detach: accepted and ignored: a batch job always outlives the process that submitted it.

    `environment` (set by `Cluster`, e.g. IPP_CONNECTION_INFO) goes into the submit
    command's environment, which the schedulers' default scripts export to the job.
    """

    #: The scheduler's name, for messages.
    scheduler: ClassVar[str]
    submit_command: ClassVar[list[str]]
    #: Cancels a job; the job id is appended.
    delete_command: ClassVar[list[str]]
    #: Sends a signal (its number is appended, then the job id); None: the scheduler has none.
    signal_command: ClassVar[list[str] | None]
    #: Lists a job; the job id is appended and `_job_listed` reads the output.
    status_command: ClassVar[list[str]]
    #: LSF's `bsub` reads the script from stdin to honour its `#BSUB` lines.
    submit_via_stdin: ClassVar[bool] = False
    job_id_regexp: ClassVar[str] = r"\d+"
    #: The prefix of a directive line in the script, e.g. "#SBATCH".
    directive: ClassVar[str]
    #: Each supported option → the directive argument it becomes.
    option_directives: ClassVar[dict[str, str]]
    #: The lines of the default script before its options (first line: the shebang).
    default_header: ClassVar[str]
    #: What runs the engines, after the directives.
    default_body: ClassVar[str] = "{engine_command}\n"
    output_directive: ClassVar[str]
    #: What the job runs, in its file names ("engines"; a controller's job: "controller").
    role: ClassVar[str] = "engines"

    _GENERAL_OPTIONS = (
        "extra_options", "batch_template", "batch_template_file", "namespace",
        "submit_command", "delete_command", "signal_command", "status_command",
        "job_id_regexp", "detach",
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        known = set(self._GENERAL_OPTIONS) | set(self.option_directives)
        unknown = sorted(set(self.options) - known)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown option(s) {unknown}; "
                f"{self.scheduler} engines take {sorted(known)}"
            )
        opts = self.options
        for name in ("submit_command", "delete_command", "signal_command", "status_command"):
            if name in opts:
                value = opts[name]
                setattr(self, name, None if value is None else _as_list(value, name))
        if "job_id_regexp" in opts:
            self.job_id_regexp = opts["job_id_regexp"]
        self.extra_options = list(opts.get("extra_options", ()))
        self.namespace = dict(opts.get("namespace", {}))
        self.batch_template = opts.get("batch_template") or ""
        if not self.batch_template and opts.get("batch_template_file"):
            self.batch_template = Path(opts["batch_template_file"]).read_text()
        #: The submitted job's id; empty until `start`.
        self.job_id = ""
        self.output_file = self.log_dir / f"corral-{self.role}-{self.cluster_id or 'default'}-{self.kind}.log"
        self.script_file = self.log_dir / f"corral-{self.role}-{self.cluster_id or 'default'}.{self.kind}"

    # -- the script ------------------------------------------------------------------
    def template(self) -> str:
        """The user's template, or the default with a directive per option that is set."""
        if self.batch_template:
            return self.batch_template
        directives = [self.output_directive]
        directives += [
            arg for name, arg in self.option_directives.items() if self.options.get(name)
        ]
        directives += [_escape_braces(option) for option in self.extra_options]
        lines = [f"{self.directive} {arg}" for arg in directives]
        shebang, _, rest = self.default_header.partition("\n")
        return "\n".join([shebang, rest.rstrip("\n"), *lines]) + "\n" + self.default_body

    def context(self, n: int) -> dict:
        """The fields a template can use."""
        engine_command = shlex.join(self.program())
        fields = dict(
            n=n,
            engine_command=engine_command,
            program_and_args=engine_command,
            profile_dir=str(self.profile_dir),
            cluster_id=self.cluster_id,
            output_file=str(self.output_file),
            **{name: self.options.get(name, "") for name in self.option_directives},
        )
        fields.update(self.namespace)
        return fields

    def program(self) -> list[str]:
        """The command the job runs (`{engine_command}`, `{program_and_args}`)."""
        return self.engine_command()

    def render_script(self, n: int) -> str:
        fields = self.context(n)
        try:
            return self.template().format(**fields)
        except KeyError as e:
            raise ValueError(
                f"the batch template uses {{{e.args[0]}}}, which is not a template field; "
                f"fields are {sorted(fields)}; add more with namespace={{...}}, and write "
                "literal braces doubled (shell: ${{VAR}})"
            ) from None

    def submit_argv(self) -> list[str]:
        if self.submit_via_stdin:
            return list(self.submit_command)
        return [*self.submit_command, str(self.script_file)]

    # -- the contract ----------------------------------------------------------------
    def start(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"start needs at least one engine, not n={n}")
        if self.job_id and self.running():
            raise RuntimeError(f"{self.scheduler} job {self.job_id} of this launcher still runs; stop it first")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.script_file.write_text(self.render_script(n))
        self.script_file.chmod(0o700)
        env = dict(os.environ, **getattr(self, "environment", {}))
        with open(self.script_file) as script:
            result = self._run(self.submit_argv(), stdin=script if self.submit_via_stdin else None, env=env)
        if result.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(self.submit_argv())} failed (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}\nthe script is {self.script_file}"
            )
        match = re.search(self.job_id_regexp, result.stdout)
        if match is None:
            raise RuntimeError(
                f"no job id (regexp {self.job_id_regexp!r}) in the output of "
                f"{self.submit_command[0]}: {result.stdout.strip()!r}"
            )
        self.job_id = match.group(0)
        self.n = n

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel the job, wait `timeout` for the scheduler to drop it, then cancel it with
        SIGKILL (where the scheduler can) and wait again; raise if it is still listed."""
        if not self.job_id:
            return
        self._run([*self.delete_command, self.job_id])
        if self._wait_gone(timeout):
            return
        if self.signal_command is not None:
            self._run([*self.signal_command, str(int(signal_module.SIGKILL)), self.job_id])
        if not self._wait_gone(max(timeout, 30.0)):
            raise TimeoutError(
                f"{self.scheduler} still lists job {self.job_id} after it was cancelled "
                f"({shlex.join(self.delete_command)} {self.job_id}); check it with "
                f"{shlex.join(self.status_command)} {self.job_id}"
            )

    def signal(self, sig: int) -> None:
        if not self.job_id:
            raise RuntimeError("no job to signal: start the engines first")
        if self.signal_command is None:
            raise NotImplementedError(
                f"{self.scheduler} has no command that sends a signal to a job; pass "
                "signal_command=[...] if your site has one, or stop the set"
            )
        result = self._run([*self.signal_command, str(int(sig)), self.job_id])
        if result.returncode != 0:
            raise RuntimeError(
                f"signalling {self.scheduler} job {self.job_id} failed: {result.stderr.strip()}"
            )

    def running(self) -> bool:
        if not self.job_id:
            return False
        result = self._run([*self.status_command, self.job_id])
        return self._job_listed(result)

    def failure(self) -> str | None:
        if not self.job_id or self.running():
            return None
        try:
            tail = "\n".join(Path(self.output_file).read_text(errors="replace").splitlines()[-20:])
        except OSError:
            tail = "(no output file)"
        return f"{self.scheduler} job {self.job_id} has ended; its output {self.output_file} ends with:\n{tail}"

    def to_dict(self) -> dict:
        return dict(
            kind=self.kind,
            engine_file=str(self.engine_file),
            profile_dir=str(self.profile_dir),
            cluster_id=self.cluster_id,
            log_dir=str(self.log_dir),
            log_level=self.log_level,
            engine_args=self.engine_args,
            options={k: str(v) if isinstance(v, Path) else v for k, v in self.options.items()},
            job_id=self.job_id,
            n=self.n,
        )

    @classmethod
    def from_dict(cls, record: dict) -> "BatchEngineSetLauncher":
        fields = dict(record)
        kind, job_id, n = fields.pop("kind", cls.kind), fields.pop("job_id"), fields.pop("n", 0)
        if kind != cls.kind:
            raise ValueError(f"this record describes a {kind!r} engine set, not {cls.kind!r}")
        options = fields.pop("options", {})
        launcher = cls(**fields, **options)
        launcher.job_id, launcher.n = job_id, n
        return launcher

    # -- scheduler specifics ---------------------------------------------------------
    def _job_listed(self, result: subprocess.CompletedProcess) -> bool:
        """Whether the status command's result shows the job as not yet finished."""
        return result.returncode == 0

    def _run(self, argv: list[str], stdin=None, env=None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                argv, stdin=stdin, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                cwd=self.log_dir if self.log_dir.is_dir() else None,
            )
        except FileNotFoundError:
            raise RuntimeError(
                f"{argv[0]} is not on PATH: the {self.kind} engine launcher needs "
                f"{self.scheduler}'s commands on this machine"
            ) from None

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


class SlurmEngineSetLauncher(BatchEngineSetLauncher):
    """One Slurm job of `n` tasks whose script runs the engines with `srun`, as
    ipyparallel's launcher does (not a job array): the engines are one allocation's job
    steps, scheduled together under one job id, so one `scancel` stops them all,
    `scancel --signal` reaches each engine, and `srun` sees the allocation's nodes."""

    kind = "slurm"
    scheduler = "Slurm"
    submit_command = ["sbatch", "--parsable"]
    delete_command = ["scancel"]
    signal_command = ["scancel", "--signal"]
    status_command = ["squeue", "--noheader", "--format=%T", "--jobs"]
    directive = "#SBATCH"
    option_directives = {
        "queue": "--partition={queue}",
        "account": "--account={account}",
        "qos": "--qos={qos}",
        "timelimit": "--time={timelimit}",
    }
    default_header = "#!/bin/sh\n#SBATCH --export=ALL\n#SBATCH --job-name=corral-engine-{cluster_id}\n#SBATCH --ntasks={n}"
    output_directive = "--output={output_file}"
    default_body = "srun {engine_command}\n"

    #: States after which a job no longer runs anything (squeue may still show them).
    FINISHED = frozenset({
        "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
        "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "TIMEOUT",
    })

    def _job_listed(self, result: subprocess.CompletedProcess) -> bool:
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:  # already purged from slurmctld
                return False
            raise RuntimeError(f"squeue failed (exit {result.returncode}): {result.stderr.strip()}")
        states = result.stdout.split()
        return any(state not in self.FINISHED for state in states)


class PBSEngineSetLauncher(BatchEngineSetLauncher):
    """A PBS (Torque) job array of `n` elements, one engine each, as ipyparallel's
    defaults. The job id is qsub's whole output (e.g. `123[].server`): qdel and qsig need
    the array's `[]` form."""

    kind = "pbs"
    scheduler = "PBS"
    submit_command = ["qsub"]
    delete_command = ["qdel"]
    signal_command = ["qsig", "-s"]
    status_command = ["qstat"]
    job_id_regexp = r"\S+"
    directive = "#PBS"
    option_directives = {
        "queue": "-q {queue}",
        "account": "-A {account}",
        "timelimit": "-l walltime={timelimit}",
    }
    default_header = "#!/bin/sh\n#PBS -V\n#PBS -N corral-engine-{cluster_id}\n#PBS -t 1-{n}"
    output_directive = "-j oe\n#PBS -o {output_file}"

    def _job_listed(self, result: subprocess.CompletedProcess) -> bool:
        # qstat exits non-zero for a job the server no longer knows; C/F: completed/finished.
        if result.returncode != 0:
            return False
        rows = [line.split() for line in result.stdout.splitlines() if line.strip()]
        return bool(rows) and len(rows[-1]) >= 5 and rows[-1][4] not in ("C", "F")


class SGEEngineSetLauncher(PBSEngineSetLauncher):
    """A Grid Engine job array (`-t 1-n`), one engine per task. Grid Engine has no
    command that signals a job (qsig is PBS's), so `signal` raises unless
    `signal_command` is given."""

    kind = "sge"
    scheduler = "Grid Engine"
    signal_command = None
    status_command = ["qstat", "-j"]
    job_id_regexp = r"\d+"
    directive = "#$"
    option_directives = {
        "queue": "-q {queue}",
        "account": "-A {account}",
        "timelimit": "-l h_rt={timelimit}",
    }
    default_header = "#!/bin/sh\n#$ -V\n#$ -S /bin/sh\n#$ -N corral-engine-{cluster_id}\n#$ -t 1-{n}"
    output_directive = "-j y\n#$ -o {output_file}"

    def _job_listed(self, result: subprocess.CompletedProcess) -> bool:
        # `qstat -j` exits 1 ("Following jobs do not exist") once the job has left.
        return result.returncode == 0


class LSFEngineSetLauncher(BatchEngineSetLauncher):
    """An LSF job array (`-J name[1-n]`), one engine per element; the script goes to
    `bsub` on stdin, which is how bsub honours `#BSUB` lines."""

    kind = "lsf"
    scheduler = "LSF"
    submit_command = ["bsub"]
    delete_command = ["bkill"]
    signal_command = ["bkill", "-s"]
    status_command = ["bjobs", "-noheader", "-o", "stat"]
    submit_via_stdin = True
    directive = "#BSUB"
    option_directives = {
        "queue": "-q {queue}",
        "account": "-P {account}",
        "timelimit": "-W {timelimit}",
    }
    default_header = "#!/bin/sh\n#BSUB -env all\n#BSUB -J corral-engine-{cluster_id}[1-{n}]"
    output_directive = "-o {output_file}\n#BSUB -e {output_file}"

    def _job_listed(self, result: subprocess.CompletedProcess) -> bool:
        # bjobs says "Job <id> is not found" (non-zero) once LSF has forgotten the job.
        if result.returncode != 0:
            return False
        return any(state not in ("DONE", "EXIT") for state in result.stdout.split())


def _as_list(value, name: str) -> list[str]:
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise TypeError(f"{name} must be a list of strings (or one command line), not {value!r}")


def _escape_braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")
