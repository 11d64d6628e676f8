"""What every backend answers: submit runs, poll many jobs in one call, cancel
one, say where its logs are. The rest of the suite sees a job only as a
``JobRecord`` (what was submitted) and a ``JobState`` (what became of it), in
the same words for every backend; only a backend reads squeue, /proc or
submitit's folders to say so."""
from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Iterable

from reproduce.backends.records import JobRecord
from reproduce.node.run_lock import HELD

if TYPE_CHECKING:
    from reproduce.backends.clusters import Cluster
    from reproduce.node.payload import Payload


class Phase(str, Enum):
    """Where a job is, whatever ran it."""
    WAITING = "waiting"   # queued (or requeued) by the scheduler
    STARTED = "started"
    ENDED = "ended"
    UNKNOWN = "unknown"   # the backend gave no usable answer this time: ask again

    __str__ = str.__str__
    __format__ = str.__format__


class Result(str, Enum):
    """What the job's own code reported (submitit's result pickle)."""
    SUCCESS = "success"
    ERROR = "error"
    HELD = "held"         # it found its run held by another live job and left it untrained (``run_lock``)

    __str__ = str.__str__
    __format__ = str.__format__


@dataclass(frozen=True)
class JobState:
    """What became of a run's job, the same for every backend."""
    job_id: str
    where: str                            # "SLURM job 42", "local job 4242": how a person names it
    phase: Phase
    state: str = ""                       # the scheduler's word, lower case: "pending", "cancelled by 1000", "ended"
    earlier_states: tuple[str, ...] = ()  # a requeued job's earlier ends, e.g. ("node_fail",)
    result: Result | None = None          # None when the job could not report
    log_tail: str = ""
    slurm_uid: str = ""                   # the uid slurmctld runs as (a cancel by it is SLURM's own)
    cancelled: bool = False               # stopped by `reproduce cancel`
    note: str = ""                        # why the phase is UNKNOWN, in the backend's words
    elsewhere: str = ""                   # the host that alone can see or stop this job ('' when this one can)
    queued_until_tracked: bool = False    # a started job reads as queued until its run trains (a local
                                          # process waits for a free slot first)

    def __post_init__(self) -> None:  # the words as records and older callers spell them
        object.__setattr__(self, "phase", Phase(self.phase))
        if self.result is not None:
            object.__setattr__(self, "result", Result(self.result))


class Backend(ABC):
    """One place that runs jobs. ``cluster`` is needed only to submit."""

    name: ClassVar[str]

    def __init__(self, cluster: "Cluster | None" = None) -> None:
        self.cluster = cluster

    @abstractmethod
    def admit(self, profile, parallel: int = 1, checks_only: bool = False, workdir: Path | None = None
              ) -> tuple[str, ...]:
        """Refuse, on one line, a profile (or a work dir) this backend cannot run (before anything is
        submitted); returns the GPUs of this machine the runs may use (local runs only).
        ``checks_only``: for ``reproduce check``, which runs the preflight once per task, not the training."""

    @abstractmethod
    def submit(self, folder: Path, payloads: list["Payload"], gpus: int, processes: int | None = None
               ) -> dict[str, JobRecord]:
        """One job per payload, recorded by config hash."""

    @abstractmethod
    def poll(self, records: Iterable[JobRecord]) -> dict[JobRecord, JobState]:
        """Every record's job state, in one call however many there are."""

    @abstractmethod
    def cancel(self, record: JobRecord) -> None:
        """Stop the job (a no-op when it has ended meanwhile)."""

    @abstractmethod
    def run_check(self, fn, payload: dict, folder: Path, gpus: int, processes: int, say=print) -> list:
        """Run ``fn(payload)`` where this backend's runs would run, once per task (``say``: progress
        for the person waiting); every task's answer, in one list."""

    def log_paths(self, record: JobRecord) -> list[Path]:
        """The job's stdout and stderr files (task 0 of an array task)."""
        paths = _paths(record)
        return [paths.stdout, paths.stderr]

    # shared by the backends: what submitit's files say of an ended job
    def ended(self, record: JobRecord, state: str, **kw) -> JobState:
        return JobState(record.job_id, self.where(record), Phase.ENDED, state, result=result_of(record),
                        log_tail=log_tail(record), cancelled=bool(record.cancelled), **kw)

    def where(self, record: JobRecord) -> str:
        return f"{self.name} job {record.job_id}"


def result_of(record: JobRecord) -> Result | None:
    """What the job's own code reported in the result pickle submitit writes when it returns or
    raises; None when the process was killed first."""
    path = _paths(record).result_pickle
    try:
        with open(path, "rb") as fh:
            outcome = pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
        return None
    if not isinstance(outcome, tuple) or not outcome:
        return None
    if outcome[0] == "success" and len(outcome) > 1 and isinstance(outcome[1], dict) and HELD in outcome[1]:
        return Result.HELD
    try:
        return Result(str(outcome[0]))
    except ValueError:
        return None


def log_tail(record: JobRecord, lines: int = 8) -> str:
    """The end of the job's first task's log (stderr, else stdout). Named, not globbed: a
    table's submitit folder holds every task's logs, and ``status`` reads this for each ended job."""
    paths = _paths(record)
    for path in (paths.stderr, paths.stdout):
        try:
            text = path.read_text(errors="replace").strip()
        except OSError:
            continue
        if text:
            return "\n".join(text.splitlines()[-lines:])
    return ""


def _paths(record: JobRecord):
    """submitit's names for the files of the job's first task (imported here: only a command that
    looks at a job's files pays for submitit)."""
    from submitit.core.utils import JobPaths
    return JobPaths(record.folder, record.job_id, task_id=0)

