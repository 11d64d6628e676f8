"""The submit stage of ``reproduce run``: which runs to submit, their payloads, their records.

``Submission`` holds what one ``reproduce run`` decided for a work dir: the
profile, the cluster, the tracking store and the per-work-dir lock under
which deciding, submitting and recording happen together, so two
invocations sharing rows submit each run once (the second reattaches).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from reproduce.backends.clusters import Cluster
from reproduce.node.payload import DDP_LAUNCHER, Payload
from reproduce.sweep.plan import Run
from reproduce.sweep.profiles import Profile
from reproduce.backends.records import JobRecord, JobStore


@dataclass
class Submission:
    """Submits a profile's runs from one work dir to one cluster, and records their jobs."""

    profile: Profile
    cluster: Cluster
    workdir: Path
    tracking_uri: str
    data_root: Path             # the prepared dataset, where the jobs read it
    torch_home: Path
    parallel: int = 1
    local_gpu_ids: tuple[str, ...] = ()
    stale: Mapping[str, str] = field(default_factory=dict)  # config hash -> the stale finished MLflow run
                                                            # retrained (`run --rerun-stale`)
    stale_libraries: bool = False  # `--stale-libraries`: other library versions make a run stale

    def __post_init__(self) -> None:
        self.store = JobStore.at(self.workdir)  # the work dir's job records

    @property
    def submitit_folder(self) -> Path:
        return self.workdir / ".reproduce" / "submitit"

    def work_dir(self, run: Run) -> Path:
        """Where a run's checkpoints live: one folder per profile and config hash."""
        return self.workdir / "work_dirs" / self.profile.name / run.config_hash

    def payload(self, run: Run, record: JobRecord | None = None) -> Payload:
        """``record``: the run's last job; a run whose last job was a rerun (killed, failed) is
        submitted as that rerun again."""
        prof = self.profile
        rerun_of = self.stale.get(run.config_hash) or (record.rerun_of if record is not None else None) or ""
        return Payload(config_hash=run.config_hash, config=run.config_name, options=run.options,
                       profile=prof.name, rows=tuple(run.rows), seed=run.seed, tracking_uri=self.tracking_uri,
                       work_dir=str(self.work_dir(run)), data_root=str(self.data_root),
                       config_dirs=tuple(prof.config_dirs),
                       launcher=DDP_LAUNCHER if prof.processes > 1 else "none", gpus=prof.gpus, processes=prof.processes,
                       torch_home=str(self.torch_home), signal_delay_s=self.cluster.signal_delay_s,
                       slot_dir=str(self.workdir / ".reproduce" / "slots"), slots=self.parallel,
                       local_gpu_ids=self.local_gpu_ids, rerun_of=rerun_of, stale_libraries=self.stale_libraries,
                       fps_images=prof.fps_images, fps_warmup=prof.fps_warmup)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Decide, submit and record under one lock per work dir."""
        with self.store.submitting():
            yield

    def set_stale_aside(self, runs: list[Run]) -> None:
        """A stale run's final checkpoints must not be resumed from: kept aside, not deleted."""
        for run in runs:
            wd = self.work_dir(run)
            if wd.exists():
                wd.rename(wd.with_name(f"{wd.name}.stale-{int(time.time())}"))

    def submit(self, runs: list[Run], records: dict[str, JobRecord], resubmitted: bool = False
               ) -> dict[str, JobRecord]:
        """Submit ``runs`` and record their jobs, each after the run's earlier jobs."""
        payloads = [self.payload(r, records.get(r.config_hash)) for r in runs]
        jobs = self.cluster.backend.submit(self.submitit_folder, payloads, self.profile.gpus,
                                                self.profile.processes)
        new = {h: records[h].then(job, resubmitted) if h in records else job for h, job in jobs.items()}
        self.store.save(self.profile.name, new)
        return new

    def resubmit(self, runs: list[Run], seen: dict[str, JobRecord]) -> dict[str, JobRecord]:
        """Submit again the runs whose job the system killed, unless another `reproduce run`
        resubmitted one meanwhile (its record names a newer job than ``seen``)."""
        with self.locked():
            now = self.store.records(self.profile.name)
            again = [r for r in runs if _job_id(now.get(r.config_hash)) == _job_id(seen.get(r.config_hash))]
            return self.submit(again, now, resubmitted=True)


def _job_id(record: JobRecord | None) -> str | None:
    return record.job_id if record is not None else None
