"""Jobs on this machine: submitit ``LocalExecutor`` controllers, detached
processes that outlive ``reproduce run`` (like SLURM jobs do). They take a slot
lock (``local_slot``) before training, so submitting a whole table at once
still trains ``--parallel`` runs at a time, and a per-run lock in the work dir
makes a second copy of the same run wait instead of training twice. A job is
its controller's pid, told from a later process of the same pid by its host,
boot and start time.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import submitit

from reproduce.backends import local_slot
from reproduce.backends.base import Backend, JobState, Phase
from reproduce.backends.records import JobRecord
from reproduce.backends.train_job import TrainJob
from reproduce.errors import UserError
from reproduce.node.payload import Payload


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
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def _popen_in_new_session(slot_dir: str | None, slots: int) -> Iterator[None]:
    """``subprocess.Popen`` as submitit's local module calls it to start a controller, with
    ``start_new_session=True`` (and SIGINT at its default), behind the wait for a slot when
    ``slot_dir`` is given, for the duration of one submission (the CLI submits from its only thread).
    submitit offers no other way in: its local module calls ``subprocess.Popen`` itself."""
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


@contextlib.contextmanager
def _stdio_detached() -> Iterator[None]:
    """Local controllers outlive ``reproduce`` and inherit its stdout/stderr:
    held open by them, a pipe (``reproduce run --no-wait | tee``, a caller
    capturing the output) would not end until the jobs do. They log to files."""
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


def local_gpu_ids() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES names them: the caller's own list where it set one."""
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    given = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return given[:count] if given else [str(i) for i in range(count)]


class LocalBackend(Backend):
    name = "local"

    def admit(self, profile, parallel: int = 1, checks_only: bool = False, workdir: Path | None = None
              ) -> tuple[str, ...]:
        """One process per run, and the GPUs a GPU profile needs (torch imported only for those)."""
        if profile.processes > 1 and not checks_only:
            raise UserError(f"profile {profile.name!r} trains each run in {profile.processes} processes; --cluster "
                            "local runs one", hint="use a SLURM cluster profile, or a profile with one process per run")
        if not profile.gpus:
            return ()
        here = local_gpu_ids()
        if profile.gpus > len(here):
            raise UserError(f"profile {profile.name!r} trains each run on {profile.gpus} GPU(s) and this machine has "
                            f"{len(here)}", hint="use a cluster profile with GPUs (--cluster NAME), or a "
                            "profile with gpus: 0")
        if profile.gpus * parallel > len(here):
            raise UserError(f"--parallel {parallel} trains {parallel} runs of {profile.gpus} GPU(s) at once and this "
                            f"machine has {len(here)}", hint=f"use --parallel {len(here) // profile.gpus}")
        return tuple(here)

    def executor(self, folder: Path, slot_dir: str | None = None, slots: int = 1) -> DetachedLocalExecutor:
        cluster = self.cluster
        ex = DetachedLocalExecutor(Path(folder) / "local", cluster.max_requeues, slot_dir, slots)
        ex.update_parameters(timeout_min=cluster.time_min if cluster.file else 24 * 60, gpus_per_node=0,
                             tasks_per_node=1, signal_delay_s=cluster.signal_delay_s)
        return ex

    def submit(self, folder: Path, payloads: list[Payload], gpus: int, processes: int | None = None
               ) -> dict[str, JobRecord]:
        if not payloads:
            return {}
        ex = self.executor(folder, payloads[0].slot_dir or None, payloads[0].slots)
        with _stdio_detached():
            jobs = [ex.submit(LocalSlotJob(), p) for p in payloads]
        now = time.time()
        return {p.config_hash: JobRecord(self.name, str(j.job_id), str(j.paths.folder), now,
                                         rerun_of=p.rerun_of or None, **process_identity(int(j.job_id)))
                for p, j in zip(payloads, jobs)}

    def poll(self, records: Iterable[JobRecord]) -> dict[JobRecord, JobState]:
        return {r: self.state_of(r) for r in records}

    def state_of(self, record: JobRecord) -> JobState:
        alive = local_job_alive(record)
        if alive is None:
            return JobState(record.job_id, self.where(record), Phase.UNKNOWN, f"local job on {record.host}",
                            note=f"local job on {record.host} (pid {record.job_id}): only that machine can tell "
                                 "whether it still runs; run `reproduce status` there", elsewhere=record.host or "")
        if alive:
            return JobState(record.job_id, self.where(record), Phase.STARTED, queued_until_tracked=True)
        return self.ended(record, "ended")

    def cancel(self, record: JobRecord) -> None:
        """submitit's own cancel of a local job: SIGINT to its controller, which stops the
        training process, then itself."""
        try:
            os.kill(int(record.job_id), signal.SIGINT)
        except ProcessLookupError:
            pass  # it ended meanwhile

    def run_check(self, fn, payload: dict, folder: Path, gpus: int, processes: int, say=print) -> list:
        return fn(payload)  # in this process: the machine the local runs train on
