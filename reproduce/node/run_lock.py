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

Jobs of a cluster take the lock from many nodes, so the work dir's file
system must give every node the same ``flock``. Some mounts do not: NFS
mounted ``nolock`` or ``local_lock=flock|all`` keeps each node's locks to
itself (two nodes both take it), Lustre mounted ``localflock`` likewise, and
Lustre mounted ``noflock`` refuses the call. ``flock_problem`` reads the
mount options and the driver refuses such a work dir before submitting.
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
        except OSError as exc:  # ENOSYS, EOPNOTSUPP, ENOLCK: a file system without flock
            fh.close()
            raise RuntimeError(f"cannot lock {self.path}: {exc.strerror or exc} ("
                               f"{flock_problem(self.path.parent) or 'its file system gives no flock'}); "
                               "use a work dir on a file system with cluster-wide locks") from None
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


# Mount options under which flock is not the same on every node (file system type -> options).
NODE_LOCAL_FLOCK = {"nfs": ("nolock", "local_lock=flock", "local_lock=all"),
                    "nfs4": ("local_lock=flock", "local_lock=all"),
                    "lustre": ("localflock", "noflock")}


def flock_problem(path: str | os.PathLike, mounts: str | None = None) -> str:
    """Why ``flock`` under ``path`` is not cluster-wide ('' when nothing says so): the mount
    that holds it (``/proc/mounts``, or ``mounts`` in its format) and the option that makes
    its locks node-local or refused."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return ""
    target = os.path.realpath(path)
    best = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point = fields[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and (best is None or len(point) > len(best[0])):
            best = (point, fields[2], fields[3].split(","))
    if best is None:
        return ""
    point, fstype, options = best
    bad = [o for o in NODE_LOCAL_FLOCK.get(fstype, ()) if o in options]
    if not bad:
        return ""
    return f"{target} is on {fstype} at {point}, mounted {bad[0]}: " + (
        "flock is refused there" if bad[0] == "noflock" else "each node sees only its own locks")

