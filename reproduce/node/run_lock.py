"""One live job per run: a lock in the run's work dir, held while the job trains.

Two jobs can come to train one config hash: ``reproduce run`` killed between
sbatch and writing the job's record submits it again next time, and a
requeue can race a resubmission. Both jobs read and write the same work dir
(its checkpoints are the run's state), so the work dir holds the lock: an
exclusive ``flock`` on ``WORK_DIR/.train.lock``, taken by the job's rank 0
before it opens the MLflow run. The kernel releases it when the process
dies, however it dies, so a requeued or resubmitted job after a kill takes
it at once; a job that finds it held by a live job exits without training
and without touching the run (``HELD``).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

HELD = "held_by"  # the key of what a job that found its run held returns (submitit's result)


class RunLock:
    """``acquire()`` -> True when this process now holds the run; ``holder`` says who does."""

    def __init__(self, work_dir: str | os.PathLike) -> None:
        self.path = Path(work_dir) / ".train.lock"
        self._fh = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(identity()))
        fh.flush()
        self._fh = fh  # held until this process ends or release()
        return True

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it ("SLURM job 42 on node3 (pid 123)")."""
        try:
            who = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "another process"
        where = f"SLURM job {who['slurm_job']}" if who.get("slurm_job") else "a local job"
        return f"{where} on {who.get('host', '?')} (pid {who.get('pid', '?')})"


def identity() -> dict[str, str | int]:
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}" if job else os.environ.get("SLURM_JOB_ID", "")
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": job}
