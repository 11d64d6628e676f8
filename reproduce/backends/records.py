"""What ``reproduce run`` submitted, kept on disk so a later call reattaches.

``.reproduce/state/jobs.json`` maps ``PROFILE:HASH`` to the ``JobRecord`` of
the job that trains that config (backend, job id, submitit folder, and its
earlier jobs). It is rewritten atomically under a lock, so a ``kill -9`` of
the submitting process never leaves a torn file, and two ``reproduce``
processes never lose each other's records.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator


@dataclass(frozen=True)
class JobRecord:
    """One job that trains (or trained) a run, as ``jobs.json`` keeps it."""

    backend: str                      # local | slurm
    job_id: str                       # SLURM's JOB or JOB_TASK; a local controller's pid
    folder: str                       # the submitit folder its logs and result pickle are in
    submitted: float = 0.0            # when (epoch seconds): SLURM's silence just after it is no answer yet
    host: str | None = None           # a local job's process: host, boot and start time tell it from a reused pid
    boot_id: str | None = None
    started_ticks: str | None = None
    cancelled: float | None = None    # when `reproduce cancel` stopped it
    resubmits: int = 0                # how often `run` resubmitted the run after the system killed its job
    rerun_of: str | None = None       # a rerun's job (`run --rerun-stale`): the stale finished MLflow run
                                      # it replaces; the job that trained that run is no rerun of it
    earlier: tuple["JobRecord", ...] = ()  # the run's earlier jobs, oldest first (`reproduce logs --attempt`)

    @property
    def attempts(self) -> list["JobRecord"]:
        """Every job that trained this run, oldest first."""
        return [*self.earlier, self]

    def then(self, new: "JobRecord", resubmitted: bool = False) -> "JobRecord":
        """The record of the run's next job ``new``, keeping this one among its earlier jobs;
        ``resubmitted``: sent again by `run` after the system killed this job (counted against
        the cluster's ``max_requeues``; a submission of the user's starts the count again)."""
        mine = replace(self, earlier=(), resubmits=0)
        return replace(new, earlier=(*self.earlier, mine), resubmits=self.resubmits + 1 if resubmitted else 0)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v not in (None, (), [], 0) or k == "job_id"}
        if self.earlier:
            out["earlier"] = [e.to_json() for e in self.earlier]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JobRecord":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["job_id"] = str(values.get("job_id", ""))
        values["earlier"] = tuple(cls.from_json(e) for e in data.get("earlier", []))
        values.setdefault("backend", "slurm")
        values.setdefault("folder", "")
        return cls(**values)


class JobStore:
    """Records keyed ``PROFILE:HASH``: a config trains once per profile."""

    @classmethod
    def at(cls, workdir: Path) -> "JobStore":
        return cls(Path(workdir) / ".reproduce" / "state")

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / "jobs.json"
        self.lock_path = self.root / "jobs.lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError:
            # Never lose the evidence: keep the unreadable file aside.
            self.path.rename(self.path.with_suffix(f".corrupt.{int(time.time())}"))
            return {}

    def load(self) -> dict[str, Any]:
        with self._locked():
            return self._read()

    def update(self, records: dict[str, Any]) -> None:
        with self._locked():
            data = self._read()
            data.update(records)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)

    @contextlib.contextmanager
    def submitting(self) -> Iterator[None]:
        """Held by ``reproduce run`` from reading the records to saving the new ones:
        two invocations sharing rows in one work dir decide one after the other,
        so the second reattaches to what the first submitted instead of submitting it again."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "submit.lock", "a+") as fh:
            if _try_lock(fh) is False:
                print("reproduce: another `reproduce run` in this work dir is submitting; waiting for it",
                      file=sys.stderr, flush=True)
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def key(profile: str, config_hash: str) -> str:
        """A config trains once per profile: its records are keyed by both."""
        return f"{profile}:{config_hash}"

    def records(self, profile: str) -> dict[str, JobRecord]:
        """This profile's records by config hash."""
        return {k.split(":", 1)[1]: JobRecord.from_json(v) for k, v in self.load().items()
                if k.startswith(profile + ":")}

    def save(self, profile: str, records: dict[str, JobRecord]) -> None:
        """Store records by config hash under this profile."""
        self.update({self.key(profile, h): r.to_json() for h, r in records.items()})


def _try_lock(fh) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
