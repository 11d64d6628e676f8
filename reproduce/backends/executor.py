"""Submitting runs through submitit: SLURM job arrays, or local processes.

Local jobs are submitit ``LocalExecutor`` controllers: detached processes that
outlive ``reproduce run`` (like SLURM jobs do). They take a slot lock
(``.reproduce/slots``) before training, so submitting a whole table at once
still trains ``--parallel`` runs at a time, and a per-run lock in the work dir
makes a second copy of the same run wait instead of training twice.
"""
from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import submitit

from reproduce.sweep.clusters import Cluster
from reproduce.errors import UserError
from reproduce.backends import local_slot
from reproduce.node.job import TrainJob
from reproduce.node.payload import Payload
from reproduce.node.run_lock import HELD
from reproduce.backends.records import JobRecord
from reproduce.backends.slurm_view import ENDED, UNKNOWN, VANISHED, WAITING, SlurmView



def slot_devices(gpu_ids: list[str], gpus: int, slot_index: int) -> str:
    """The CUDA_VISIBLE_DEVICES of the local run in slot ``slot_index``: its own ``gpus`` of the machine's."""
    mine = gpu_ids[slot_index * gpus:(slot_index + 1) * gpus]
    if len(mine) < gpus:
        raise RuntimeError(f"slot {slot_index} needs GPUs {slot_index * gpus}..{(slot_index + 1) * gpus - 1} "
                           f"of {len(gpu_ids)} ({','.join(gpu_ids)})")
    return ",".join(mine)


class LocalSlotJob(TrainJob):
    """TrainJob on its local slot (``local_slot``: the controller started once the slot was free)."""

    def __call__(self, payload: Payload) -> dict:
        if payload.slots > 1:  # share the cores instead of oversubscribing them
            import torch
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // payload.slots))
        if payload.gpus:
            # submitit hides every GPU from a local job (CUDA_VISIBLE_DEVICES=''); the slot
            # says which of this machine's GPUs are ours, before anything initialises CUDA
            slot_index = int(os.environ.get(local_slot.SLOT_ENV, "0"))
            os.environ["CUDA_VISIBLE_DEVICES"] = slot_devices(list(payload.local_gpu_ids), payload.gpus, slot_index)
        return super().__call__(payload)

    def checkpoint(self, payload: Payload) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(LocalSlotJob(), payload)


class DetachedLocalExecutor(submitit.LocalExecutor):
    """submitit's local executor, its controllers started in a session of their own,
    each once its job has a slot (``slot_dir``, ``slots``: see ``local_slot``).

    Started as submitit starts them, they share ``reproduce``'s process group:
    Ctrl-C in the terminal (SIGINT to the group) or a closed SSH session
    (SIGHUP) killed every local job and left its MLflow run RUNNING, although
    local jobs, like SLURM jobs, are meant to outlive ``reproduce run``.
    """

    def __init__(self, folder, max_num_timeout: int = 3, slot_dir: str | None = None, slots: int = 1) -> None:
        super().__init__(folder=folder, max_num_timeout=max_num_timeout)
        self.slot_dir, self.slots = slot_dir, slots

    def _submit_command(self, command: str):
        with _popen_in_new_session(self.slot_dir, self.slots):
            return super()._submit_command(command)


def _default_sigint() -> None:
    """In the controller before it starts: SIGINT back to its default. A ``reproduce`` started
    with SIGINT ignored (from a script's background job, ``nohup ... &``) passes that on, and a
    controller ignoring SIGINT cannot be cancelled: submitit's cancel is a SIGINT."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def _popen_in_new_session(slot_dir: str | None, slots: int) -> Iterator[None]:
    """``subprocess.Popen`` as submitit's local module calls it to start a controller, with
    ``start_new_session=True`` (and SIGINT at its default), behind the wait for a slot when
    ``slot_dir`` is given, for the duration of one submission (the CLI submits from its only thread)."""
    from submitit.local import local
    original = local.subprocess.Popen

    def popen(cmd, *args, **kwargs):
        if slot_dir is not None and isinstance(cmd, list):
            cmd = local_slot.command(slot_dir, slots, cmd)
        return original(cmd, *args, start_new_session=True, preexec_fn=_default_sigint, **kwargs)
    local.subprocess.Popen = popen
    try:
        yield
    finally:
        local.subprocess.Popen = original


def make_executor(cluster: Cluster, folder: Path, gpus: int, processes: int | None = None,
                  slot_dir: str | None = None, slots: int = 1):
    """A submitit executor for one run's resources: ``processes`` tasks (one per GPU by default);
    local jobs wait for one of ``slots`` slots in ``slot_dir`` before their time limit starts."""
    folder = Path(folder)
    if cluster.is_local:
        ex = DetachedLocalExecutor(folder / "local", cluster.max_requeues, slot_dir, slots)
        ex.update_parameters(timeout_min=cluster.time_min if cluster.file else 24 * 60, gpus_per_node=0,
                             tasks_per_node=1, signal_delay_s=cluster.signal_delay_s)
        return ex
    ex = submitit.AutoExecutor(folder=folder / "slurm" / "%j", cluster="slurm",
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


def submit(cluster: Cluster, folder: Path, payloads: list[Payload], gpus: int, processes: int | None = None
           ) -> dict[str, JobRecord]:
    """One job per payload: a SLURM array (one array task a row, ``processes`` tasks each) or local controllers."""
    if not payloads:
        return {}
    ex = make_executor(cluster, folder, gpus, processes, payloads[0].slot_dir or None, payloads[0].slots)
    fn = LocalSlotJob() if cluster.is_local else TrainJob()
    if cluster.is_local:
        with _stdio_detached():
            jobs = [ex.submit(fn, p) for p in payloads]
    else:
        # A table of more rows than the cluster's MaxArraySize goes as several arrays.
        size = max_array_size()
        jobs = [j for i in range(0, len(payloads), size) for j in ex.map_array(fn, payloads[i:i + size])]
    backend = "local" if cluster.is_local else "slurm"
    now = time.time()
    return {p.config_hash: JobRecord(backend, str(j.job_id), str(j.paths.folder), now, rerun_of=p.rerun_of or None,
                                     **(process_identity(int(j.job_id)) if cluster.is_local else {}))
            for p, j in zip(payloads, jobs)}


DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize


def max_array_size() -> int:
    """How many tasks one job array may hold here: the controller's MaxArraySize
    (task indices run 0 to MaxArraySize - 1), SLURM's default when unreadable."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return DEFAULT_MAX_ARRAY_SIZE
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return max(1, int(value.strip()))
    return DEFAULT_MAX_ARRAY_SIZE


@contextlib.contextmanager
def _stdio_detached() -> Iterator[None]:
    """Local controllers outlive ``reproduce`` and inherit its stdout/stderr:
    held open by them, a pipe (``reproduce run --no-wait | tee``, a caller
    capturing the output) would not end until the jobs do. They log to files."""
    import sys
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def process_identity(pid: int) -> dict[str, str]:
    """What tells this process from a later one given the same pid: the host, the
    boot (a reboot restarts pids) and its start time in clock ticks since boot."""
    import socket
    ident = {"host": socket.gethostname()}
    try:
        ident["boot_id"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        ident["started_ticks"] = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        pass
    return ident


def local_job_alive(record: JobRecord) -> bool | None:
    """True while the recorded local job's process runs; False once it ended (or its
    pid now names another process, after a reboot or pid reuse); None when the job
    ran on another host, where this one cannot look."""
    import socket
    if record.host and record.host != socket.gethostname():
        return None
    pid = int(record.job_id)
    if not pid_alive(pid):
        return False
    now = process_identity(pid)
    for key in ("boot_id", "started_ticks"):
        if getattr(record, key) and now.get(key) and getattr(record, key) != now[key]:
            return False
    return True


def pid_alive(pid: int) -> bool:
    """True while the process runs (a zombie, ended but not yet reaped, counts as ended)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def job_result_state(record: JobRecord) -> str | None:
    """``success`` or ``error`` from the result submitit writes when the job's
    own code returns or raises, ``held`` when it found its run held by another
    live job and left it untrained (``run_lock``); None when the process was
    killed first."""
    import pickle
    path = submitit.core.utils.JobPaths(record.folder, record.job_id).result_pickle
    try:
        with open(path, "rb") as fh:
            outcome = pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
        return None
    if not isinstance(outcome, tuple) or not outcome:
        return None
    if outcome[0] == "success" and len(outcome) > 1 and isinstance(outcome[1], dict) and HELD in outcome[1]:
        return "held"
    return str(outcome[0])


@functools.lru_cache(maxsize=1)
def slurm_user_uid() -> str:
    """The uid slurmctld runs as (``SlurmUser = slurm(64030)``): a cancel
    requested by it is SLURM's own, not a person's."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in out.splitlines():
        if line.split("=")[0].strip() == "SlurmUser" and "(" in line:
            return line.rsplit("(", 1)[1].rstrip(") \n")
    return ""


@dataclass(frozen=True)
class JobState:
    """What became of a run's job, the same for a local process and a SLURM job."""
    job_id: str
    backend: str                          # local | slurm
    phase: str                            # waiting | started | ended | unknown (SLURM did not say; ask again)
    state: str = ""                       # the scheduler's word, lower case: "pending", "cancelled by 1000", "ended"
    earlier_states: tuple[str, ...] = ()  # a requeued job's earlier ends, e.g. ("node_fail",)
    result: str | None = None             # submitit's "success"/"error", or "held" (another live job trains
                                          # the run); None when the job could not report
    log_tail: str = ""
    slurm_uid: str = ""                   # the uid slurmctld runs as (a cancel by it is SLURM's own)
    cancelled: bool = False               # stopped by `reproduce cancel`


def job_state(record: JobRecord, view: SlurmView | None = None) -> JobState:
    """Where a run's job is: its process for a local job; for a SLURM job, ``view``
    (one poll's squeue and sacct for every job, see ``SlurmView``), taken for
    this job alone when not given."""
    job, backend = record.job_id, record.backend
    if backend == "local":
        alive = local_job_alive(record)
        if alive is None:
            return JobState(job, backend, "unknown", f"local job on {record.host}")
        if alive:
            return JobState(job, backend, "started")
        end = "ended"
    else:
        view = view if view is not None else SlurmView.take([record])
        full = view.state(record)
        word = full.split()[0].upper()
        if word == UNKNOWN:
            return JobState(job, backend, "unknown", "unknown")
        if word in WAITING:
            earlier = tuple(h.lower() for h in view.history(record)[:-1] if h not in ("PENDING", "RUNNING"))
            return JobState(job, backend, "waiting", word.lower(), earlier)
        if word not in ENDED and word != VANISHED:
            return JobState(job, backend, "started", word.lower())
        end = full.lower()
    return JobState(job, backend, "ended", end, result=job_result_state(record), log_tail=job_log_tail(record),
                    slurm_uid=slurm_user_uid() if end.startswith("cancelled") else "",
                    cancelled=bool(record.cancelled))


def job_log_tail(record: JobRecord, lines: int = 8) -> str:
    """The end of the job's first task's log (stderr, else stdout). Named, not globbed: a
    table's submitit folder holds every task's logs, and ``status`` reads this for each ended job."""
    folder, job_id = Path(record.folder), record.job_id
    candidates = [folder / f"{job_id}_0_log.err", folder / f"{job_id}_0_log.out"]
    for path in candidates:
        try:
            text = path.read_text(errors="replace").strip()
        except OSError:
            continue
        if text:
            return "\n".join(text.splitlines()[-lines:])
    return ""


def local_gpu_ids() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES names them: the caller's own list where it set one."""
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    given = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return given[:count] if given else [str(i) for i in range(count)]


def require_local_gpus(profile, cluster: Cluster) -> None:
    """A GPU profile on ``--cluster local`` needs that many GPUs here (torch imported only for GPU profiles)."""
    if not (cluster.is_local and profile.gpus):
        return
    here = len(local_gpu_ids())
    if profile.gpus > here:
        raise UserError(f"profile {profile.name!r} trains each run on {profile.gpus} GPU(s) and this machine has "
                        f"{here}", hint="use a cluster profile with GPUs (--cluster NAME), or a "
                        "profile with gpus: 0")
