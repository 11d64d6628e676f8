"""Where jobs run: the local machine or SLURM, through submitit. Only this
package knows a backend's words (job ids, squeue/sacct states, submitit's
folders); the rest of the suite asks it to submit, poll, cancel and find logs."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Iterable

from reproduce.backends.base import Backend, JobState, Phase, Result
from reproduce.backends.records import JobRecord

if TYPE_CHECKING:
    from reproduce.backends.clusters import Cluster

# Every backend, by the name its job records carry: module and class, imported on use (``plan``
# and ``status`` of a local sweep need not import submitit). A third one (a Kubernetes job, a
# plain SSH host) is one more module with a Backend subclass, and its name here.
BACKENDS: dict[str, tuple[str, str]] = {"local": ("reproduce.backends.local", "LocalBackend"),
                                        "slurm": ("reproduce.backends.slurm", "SlurmBackend")}


def _class(name: str) -> type[Backend]:
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)


def for_cluster(cluster: "Cluster") -> Backend:
    """The backend a cluster profile submits to: ``local`` is this machine, any other a SLURM cluster."""
    return _class("local" if cluster.is_local else "slurm")(cluster)


def of(record: JobRecord) -> Backend:
    """The backend that ran a recorded job."""
    if record.backend not in BACKENDS:
        from reproduce.errors import UserError
        raise UserError(f"job {record.job_id} was recorded for backend {record.backend!r}, which this version "
                        f"does not know ({', '.join(BACKENDS)})", hint="run the version of the suite that submitted it")
    return _class(record.backend)()


def poll(records: Iterable[JobRecord]) -> dict[JobRecord, JobState]:
    """Every record's job state: one call per backend, however many jobs. A record of a backend
    this version does not know reads unknown, with that said, rather than stopping the command."""
    by_backend: dict[str, list[JobRecord]] = {}
    for record in records:
        by_backend.setdefault(record.backend, []).append(record)
    states: dict[JobRecord, JobState] = {}
    for name, records_of in by_backend.items():
        if name not in BACKENDS:
            states.update({r: JobState(r.job_id, f"{name} job {r.job_id}", Phase.UNKNOWN, "unknown", note=(
                f"job {r.job_id} was recorded for backend {name!r}, which this version does not know; run the "
                "version of the suite that submitted it")) for r in records_of})
            continue
        states.update(_class(name)().poll(records_of))
    return states


__all__ = ["BACKENDS", "Backend", "JobRecord", "JobState", "Phase", "Result", "for_cluster", "of", "poll"]
