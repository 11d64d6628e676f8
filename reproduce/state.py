"""What ``reproduce run`` submitted, kept on disk so a later call reattaches.

``.reproduce/jobs.json`` maps a config hash to the job that trains it (backend,
job id, submitit folder). It is rewritten atomically under a lock, so a
``kill -9`` of the submitting process never leaves a torn file, and two
``reproduce`` processes never lose each other's records.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator


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

    def records(self, profile: str) -> dict[str, Any]:
        """This profile's records by config hash."""
        return {k.split(":", 1)[1]: v for k, v in self.load().items() if k.startswith(profile + ":")}

    def save(self, profile: str, records: dict[str, Any]) -> None:
        """Store records by config hash under this profile."""
        self.update({f"{profile}:{h}": r for h, r in records.items()})


def _try_lock(fh) -> bool:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def next_attempt(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The record of a run's new job, keeping its earlier jobs (``reproduce logs --attempt``)."""
    if old is None:
        return new
    earlier = [*old.get("earlier", []), {k: old[k] for k in ("backend", "job_id", "folder", "submitted") if k in old}]
    return {**new, "earlier": earlier}
