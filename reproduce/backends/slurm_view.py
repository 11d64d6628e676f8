"""What SLURM says about many jobs, from one ``squeue`` and one ``sacct`` call.

``status`` and ``run``'s follow loop poll every few seconds; one scheduler
call per job would mean 1,000 ``sacct`` calls a poll for a sweep of 1,000
runs, the load admins rate-limit. Here a poll costs one ``squeue`` (jobs the
controller still holds for this user, authoritative for them) and one ``sacct`` (the ends
and earlier ends of the others), whatever the number of jobs.

Reading rules, so that no job is ever resubmitted while SLURM still holds it:
- A job ``squeue`` lists is alive, whatever ``sacct`` says (slurmdbd lags:
  it can still show NODE_FAIL for a job already requeued and pending).
- A job ``squeue`` no longer lists has ended as ``sacct``'s last record says,
  if that is an end; a last record that is not an end (slurmdbd behind), or
  no answer from either command (a restarting controller), reads UNKNOWN:
  ask again at the next poll, never "failed".
- On a cluster without accounting (no slurmdbd: ``AccountingStorageType=
  accounting_storage/none``, common on small clusters) sacct never answers and
  is not asked; a job squeue no longer lists, past ``GRACE_S``, has ended
  (``GONE``), and the job's own files (submitit's result, its log) say how.
"""
from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from typing import Iterable

from reproduce.backends.records import JobRecord

# Ends sacct records: the job will not run again unless someone requeues it.
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "PREEMPTED",
         "DEADLINE", "REVOKED", "SPECIAL_EXIT"}
# Live states of a job that has not started (or was put back in the queue).
WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED", "RESIZING",
           "STOPPED", "SIGNALING_PENDING"}
UNKNOWN = "UNKNOWN"
VANISHED = "VANISHED"  # neither command knows it: an array task cancelled before it started
GONE = "GONE"  # squeue no longer lists it and no accounting says how it ended
# A job just submitted may be in neither list for a moment.
GRACE_S = 120.0


def _expand(job_id: str) -> list[str]:
    """``95_[1-3,7%2]`` (sacct's pending array tasks) -> ``95_1 95_2 95_3 95_7``; other ids as they are."""
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def _call(cmd: list[str]) -> str | None:
    """The command's output, or None when it did not answer (missing, timed out, failed)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _word(state: str) -> str:
    """``CANCELLED by 1000`` -> ``CANCELLED``."""
    return state.split()[0].upper() if state.strip() else UNKNOWN


@dataclass
class SlurmView:
    """One poll's answer for a set of jobs (``take``), read per job (``state``, ``history``)."""
    live: dict[str, str] | None = None            # squeue: job id -> state; None when squeue did not answer
    records: dict[str, list[str]] | None = None   # sacct -D: job id -> states oldest first (full words)
    calls: list[str] = field(default_factory=list)  # the commands run, for the benchmark and the tests
    accounting: bool = True                        # False: the cluster keeps no accounting (no sacct answers)

    @classmethod
    def take(cls, job_records: Iterable[JobRecord], accounting: bool = True) -> "SlurmView":
        ids = sorted({r.job_id for r in job_records if r.backend == "slurm"})
        view = cls(accounting=accounting)
        if not ids:
            return view
        import getpass
        # -u, not --me (SLURM >= 20.11 only); -r lists each array task on its own line. Without
        # accounting squeue alone says a job has ended: every user's jobs are listed, so that a
        # colleague's `status` on a shared work dir does not read the owner's live jobs as gone.
        squeue = ["squeue", *(["-u", getpass.getuser()] if accounting else []), "-h", "-r", "-o", "%i|%T"]
        text = _call(squeue)
        view.calls.append(" ".join(squeue))
        if text is not None:
            view.live = {}
            for line in text.splitlines():
                job, _, state = line.strip().partition("|")
                if job:
                    view.live[job] = state.strip().upper()
        if not accounting:
            return view
        bases = sorted({i.split("_")[0] for i in ids})
        sacct = ["sacct", "-D", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(bases)]
        text = _call(sacct)
        view.calls.append(" ".join(sacct[:-1]) + f" <{len(bases)} ids>")
        if text is not None:
            view.records = {}
            for line in text.splitlines():
                job, _, state = line.strip().partition("|")
                for one in _expand(job):
                    view.records.setdefault(one, []).append(state.strip())
        return view

    def state(self, record: JobRecord) -> str:
        """The job's state now: a squeue word (``PENDING``), an end with its detail as sacct
        writes it (``CANCELLED by 1000``), ``UNKNOWN`` (ask again) or ``VANISHED``."""
        job = record.job_id
        if self.live is None:
            return UNKNOWN
        if job in self.live:
            return self.live[job]
        history = (self.records or {}).get(job)
        if history:
            last = history[-1]
            return last if _word(last) in ENDED else UNKNOWN
        if time.time() - record.submitted < GRACE_S:
            return UNKNOWN
        if not self.accounting:
            return GONE
        return UNKNOWN if self.records is None else VANISHED

    def history(self, record: JobRecord) -> list[str]:
        """Every state sacct recorded for the job, oldest first (a requeued job's earlier ends too)."""
        return [_word(s) for s in (self.records or {}).get(record.job_id, [])]
