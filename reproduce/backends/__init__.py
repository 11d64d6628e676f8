"""Where jobs run: the local machine or SLURM, through submitit. Only this
package knows a backend's words (job ids, squeue/sacct states, submitit's
folders); the rest of the suite asks it to submit, poll, cancel and find logs."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from reproduce.backends.base import Backend, JobState, Phase, Result
from reproduce.backends.local import LocalBackend
from reproduce.backends.records import JobRecord
from reproduce.backends.slurm import SlurmBackend

if TYPE_CHECKING:
    from reproduce.backends.clusters import Cluster

# Every backend, by the name its job records carry. A third one (a Kubernetes job, a
# plain SSH host) is one more module with a Backend subclass, and its name here.
BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (LocalBackend, SlurmBackend)}


def for_cluster(cluster: "Cluster") -> Backend:
    """The backend a cluster profile submits to: ``local`` is this machine, any other a SLURM cluster."""
    return (LocalBackend if cluster.is_local else SlurmBackend)(cluster)


def of(record: JobRecord) -> Backend:
    """The backend that ran a recorded job."""
    if record.backend not in BACKENDS:
        from reproduce.errors import UserError
        raise UserError(f"job {record.job_id} was recorded for backend {record.backend!r}, which this version "
                        f"does not know ({', '.join(BACKENDS)})", hint="run the version of the suite that submitted it")
    return BACKENDS[record.backend]()


def poll(records: Iterable[JobRecord]) -> dict[JobRecord, JobState]:
    """Every record's job state: one call per backend, however many jobs."""
    by_backend: dict[str, list[JobRecord]] = {}
    for record in records:
        by_backend.setdefault(record.backend, []).append(record)
    states: dict[JobRecord, JobState] = {}
    for records_of in by_backend.values():
        states.update(of(records_of[0]).poll(records_of))
    return states


__all__ = ["BACKENDS", "Backend", "JobRecord", "JobState", "Phase", "Result", "for_cluster", "of", "poll"]
