"""Jobs on a SLURM cluster, through submitit: one job array per submission
(several when a table has more rows than the cluster's MaxArraySize), polled
for all jobs at once with one squeue and one sacct (``slurm_view``),
cancelled with scancel. The controller's configuration is read once per
process (``slurm_config``).
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

import submitit

from reproduce.backends.base import Backend, JobState, Phase
from reproduce.backends.clusters import Cluster
from reproduce.backends.records import JobRecord
from reproduce.backends.slurm_view import ENDED, GONE, UNKNOWN, VANISHED, WAITING, SlurmView
from reproduce.backends.train_job import TrainJob
from reproduce.errors import UserError, first_line
from reproduce.node.payload import Payload
from reproduce.node.run_lock import flock_problem

DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize


_CONFIG: dict[str, str] = {}
_CONFIG_FAILED = [0.0]  # when the last read got no answer
RETRY_CONFIG_S = 60.0


def slurm_config() -> dict[str, str]:
    """``scontrol show config`` as KEY -> value, read once per process. While SLURM does not answer
    it is empty, and asked again at most once a minute (a poll every second would otherwise wait
    on scontrol each time)."""
    if _CONFIG or time.time() - _CONFIG_FAILED[0] < RETRY_CONFIG_S:
        return _CONFIG
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    if not out.strip():
        _CONFIG_FAILED[0] = time.time()
        return _CONFIG
    config = _CONFIG
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


def max_array_size() -> int:
    """How many tasks one job array may hold here: the controller's MaxArraySize
    (task indices run 0 to MaxArraySize - 1), SLURM's default when unreadable."""
    value = slurm_config().get("MaxArraySize", "")
    return max(1, int(value)) if value.isdigit() else DEFAULT_MAX_ARRAY_SIZE


def accounting_on() -> bool:
    """False when the cluster keeps no job accounting (``AccountingStorageType=accounting_storage/none``:
    no slurmdbd, sacct never answers); True when it does or the configuration cannot be read."""
    return slurm_config().get("AccountingStorageType", "") != "accounting_storage/none"


def slurm_user_uid() -> str:
    """The uid slurmctld runs as (``SlurmUser = slurm(64030)``): a cancel
    requested by it is SLURM's own, not a person's."""
    value = slurm_config().get("SlurmUser", "")
    return value.rsplit("(", 1)[1].rstrip(") ") if "(" in value else ""


def check_against_slurm(cluster: Cluster, gpus_needed: int) -> None:
    """Catch an unknown partition or an unsatisfiable GPU request at plan time (``sinfo``)."""
    if shutil.which("sinfo") is None:
        raise UserError(f"cluster {cluster.name!r} needs SLURM, but sinfo is not on PATH",
                        hint="run on the cluster's login node, or use --cluster local")
    fmt = "%P|%G|%D"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", fmt], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise UserError("sinfo did not answer in 30 s", hint="is slurmctld up?") from None
    if out.returncode != 0:
        raise UserError(f"sinfo failed: {out.stderr.strip().splitlines()[0] if out.stderr.strip() else out.returncode}",
                        hint="is slurmctld up? (cluster/local-slurm.sh start starts a local one)")
    partitions = {}
    for line in out.stdout.splitlines():
        part, gres, _ = (line.split("|") + ["", "", ""])[:3]
        partitions.setdefault(part.rstrip("*"), []).append(gres)
    if cluster.partition and cluster.partition not in partitions:
        raise UserError(f"partition {cluster.partition!r} does not exist", file=cluster.file, field="partition",
                        hint=f"sinfo lists: {', '.join(sorted(partitions))}")
    if gpus_needed > 0:
        gres = partitions.get(cluster.partition, []) if cluster.partition else sum(partitions.values(), [])
        best = 0
        for g in gres:
            for part in g.split(","):
                if part.startswith("gpu"):
                    try:
                        best = max(best, int(part.split(":")[-1].split("(")[0]))
                    except ValueError:
                        pass
        if best < gpus_needed:
            raise UserError(f"runs need {gpus_needed} GPUs per node, partition {cluster.partition or '(default)'} "
                            f"offers {best}", file=cluster.file, field="gpus_per_node",
                            hint="pick a profile with fewer GPUs or another partition")


class SlurmBackend(Backend):
    name = "slurm"

    def where(self, record: JobRecord) -> str:
        return f"SLURM job {record.job_id}"

    def admit(self, profile, parallel: int = 1, checks_only: bool = False, workdir: Path | None = None
              ) -> tuple[str, ...]:
        """The partition and GPUs (``sinfo``); a work dir whose file system keeps each node's locks
        to itself (``run_lock.flock_problem``): two nodes could both train one run there."""
        check_against_slurm(self.cluster, profile.gpus)
        problem = flock_problem(workdir) if workdir is not None else ""
        if problem:
            raise UserError(f"the work dir's locks are not cluster-wide: {problem}",
                            hint="use a --workdir on a file system whose flock every node shares (NFS without "
                                 "nolock/local_lock, Lustre mounted flock), or have it remounted")
        return ()

    def executor(self, folder: Path, gpus: int, processes: int | None = None) -> submitit.AutoExecutor:
        """A submitit executor for one run's resources: ``processes`` tasks (one per GPU by default)."""
        cluster = self.cluster
        ex = submitit.AutoExecutor(folder=Path(folder) / "slurm" / "%j", cluster="slurm",
                                   slurm_max_num_timeout=cluster.max_requeues)
        extra = dict(cluster.sbatch_extra)
        if cluster.account:
            extra["account"] = cluster.account
        if cluster.qos:
            extra["qos"] = cluster.qos
        tasks = processes or max(gpus, 1)
        params: dict[str, Any] = dict(timeout_min=cluster.time_min, nodes=cluster.nodes, tasks_per_node=tasks,
                                      cpus_per_task=cluster.cpus_per_task, mem_gb=cluster.mem_gb,
                                      slurm_array_parallelism=cluster.array_parallelism, name="musu",
                                      slurm_signal_delay_s=cluster.signal_delay_s)
        if gpus:
            params["gpus_per_node"] = gpus
        if cluster.partition:
            params["slurm_partition"] = cluster.partition
        if cluster.setup:
            params["slurm_setup"] = list(cluster.setup)
        if extra:
            params["slurm_additional_parameters"] = extra
        ex.update_parameters(**params)
        return ex

    def submit(self, folder: Path, payloads: list[Payload], gpus: int, processes: int | None = None
               ) -> dict[str, JobRecord]:
        """One array task per payload, ``processes`` tasks each."""
        if not payloads:
            return {}
        ex = self.executor(folder, gpus, processes)
        size = max_array_size()
        fn = TrainJob()
        jobs = [j for i in range(0, len(payloads), size) for j in ex.map_array(fn, payloads[i:i + size])]
        now = time.time()
        return {p.config_hash: JobRecord(self.name, str(j.job_id), str(j.paths.folder), now,
                                         rerun_of=p.rerun_of or None)
                for p, j in zip(payloads, jobs)}

    def poll(self, records: Iterable[JobRecord]) -> dict[JobRecord, JobState]:
        records = list(records)
        view = SlurmView.take(records, accounting_on())  # one squeue and one sacct for all of them
        return {r: self.state_of(r, view) for r in records}

    def state_of(self, record: JobRecord, view: SlurmView) -> JobState:
        job, where = record.job_id, self.where(record)
        full = view.state(record)
        word = full.split()[0].upper()
        if word == UNKNOWN:
            return JobState(job, where, Phase.UNKNOWN, "unknown",
                            note=f"{where}: squeue and sacct gave no usable answer (a controller restarting, "
                                 "slurmdbd behind); asking again")
        if word in WAITING:
            earlier = tuple(h.lower() for h in view.history(record)[:-1] if h not in ("PENDING", "RUNNING"))
            return JobState(job, where, Phase.WAITING, word.lower(), earlier)
        if word == GONE:
            return self.ended(record, "ended (squeue no longer lists it; this cluster keeps no accounting, "
                                      "so the job's own result and log say how)")
        if word not in ENDED and word != VANISHED:
            return JobState(job, where, Phase.STARTED, word.lower())
        end = full.lower()
        return self.ended(record, end, slurm_uid=slurm_user_uid() if end.startswith("cancelled") else "")

    def cancel(self, record: JobRecord) -> None:
        out = subprocess.run(["scancel", record.job_id], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise UserError(f"scancel {record.job_id} failed: {out.stderr.strip() or out.stdout.strip()}",
                            hint="is this the machine that submitted it, with SLURM's commands on PATH?")

    def run_check(self, fn, payload: dict, folder: Path, gpus: int, processes: int, say=print) -> list:
        """One short job, one task per GPU (as a run uses them); every task's rows."""
        ex = self.executor(folder, gpus, processes)
        ex.update_parameters(timeout_min=min(self.cluster.time_min, 15), name="musu-check")
        job = ex.submit(fn, payload)
        say(f"check job {job.job_id} submitted to {self.cluster.name} ({processes} task(s)); waiting for it")
        try:
            results = job.results()
        except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError) as exc:
            raise UserError(f"the check job {job.job_id} did not run to the end: {first_line(exc)}",
                            hint=f"its log: {job.paths.stderr}") from None
        return [row for rows in results for row in rows]
