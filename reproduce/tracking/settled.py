"""Runs that have settled, kept under the work dir, so a tracking server is asked only about the rest.

Through a server (``http://``) the suite reads runs with MLflow's ``search_runs``,
which returns every param of every run: at 10,000 runs of 300 params a
``status`` took three minutes, and every poll read every finished run again.
A FINISHED run never changes afterwards (the job tags it, then ends it; nothing
in the suite writes to it later), so what was read of it is kept here and a
read asks the store only for the runs that are not FINISHED (running, failed,
killed: they may still move), the runs FINISHED since the last read (from
``SKEW_S`` before it, since end times come from the jobs' hosts' clocks: this
also brings the runs of other work dirs, and those made and ended between two
reads), and the ids of deleted runs, which are dropped from what is kept.
How the store is asked is the caller's (``Fetch``): MLflow's ``search_runs``
with filters, or the lean route of ``reproduce server`` (``server_app``).

A run this read saw moving and the next one does not see at all (it ended, and
its host's clock runs more than ``SKEW_S`` behind) is asked for by id (``Get``),
so no run read once falls out of sight; the window then matters only for runs
made and ended between two reads. A run moved back from FINISHED (reopened by
hand) comes back among the moving ones and replaces what was kept. What this cannot see (a run purged by
``mlflow gc`` before any read saw it deleted, a finished run's tags edited by
hand) is caught by a whole read every ``FULL_EVERY_S``; a file of another store,
experiment or format, or one that cannot be parsed, is ignored (an experiment is known by its id and
creation time, so a server restarted over another database with the same ids
is another store) and rewritten
from a whole read. The file is replaced atomically, so two commands reading at
once each leave a whole one.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

FORMAT = 3
SKEW_S = 900.0             # host clocks agree within minutes (as the lease assumes)
FULL_EVERY_S = 6 * 3600.0  # a whole read at least this often


@dataclass(frozen=True)
class Read:
    """One run as read from the store: what ``TrackedRun`` holds, and when it started (the order)."""
    run_id: str
    status: str
    tags: dict
    metrics: dict
    start_time: int

    @classmethod
    def of(cls, run) -> "Read":
        """An MLflow ``Run`` as read (``get_run`` or ``search_runs``); its dicts handed over, not copied."""
        return cls(run.info.run_id, run.info.status, run.data.tags, run.data.metrics, run.info.start_time or 0)


# ``fetch(None)`` -> (every active run, newest first; []); ``fetch(since_ms)`` -> (the active runs
# not FINISHED or FINISHED at or after ``since_ms``, each once; the ids of the deleted runs)
Fetch = Callable[["int | None"], "tuple[list[Read], list[str]]"]
# ``get(run_id)`` -> the run as the store has it now; None when it is deleted or gone
Get = Callable[[str], "Read | None"]


def cache_file(folder: Path, uri: str, profile: str) -> Path:
    """One file per store and profile (the URI holds no password: ``credentials`` took it out)."""
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path(folder) / f"{profile}-{key}.json"


class SettledRuns:
    """The kept runs of one experiment of one store, and the read that keeps them right."""

    def __init__(self, path: Path, uri: str, experiment_id: str, clock: Callable[[], float] = time.time) -> None:
        self.path, self.uri, self.experiment_id, self.clock = Path(path), uri, str(experiment_id), clock
        self.last_read: str = ""  # "whole" or "since": what the last ``read`` asked the store (for tests and benchmarks)

    def read(self, fetch: Fetch, get: Get) -> list[Read]:
        """Every active run of the experiment, newest first, as the store has it now."""
        started = self.clock()
        kept = self._load(started)
        if kept is None:
            runs, _ = fetch(None)
            self._save(started, started, {r.run_id: r for r in runs if r.status == "FINISHED"},
                       [r.run_id for r in runs if r.status != "FINISHED"], [])
            self.last_read = "whole"
            return runs
        settled, full_at, read_at, moving_before, deleted_before = kept
        runs, deleted = fetch(int((read_at - SKEW_S) * 1000))
        for run_id in deleted:
            settled.pop(run_id, None)
        seen = {r.run_id for r in runs}.union(deleted)
        # seen moving and gone from sight, or deleted and no longer: ended on a host whose clock is
        # behind, or restored (a purged one reads None)
        again = (set(moving_before) | set(deleted_before)) - seen
        runs = [*runs, *(r for r in map(get, sorted(again)) if r is not None)]
        moving = []
        for run in runs:
            settled.pop(run.run_id, None)  # what was kept of it (a run reopened by hand) is old
            if run.status == "FINISHED":
                settled[run.run_id] = run
            else:
                moving.append(run)
        self._save(full_at, started, settled, [r.run_id for r in moving], deleted)
        self.last_read = "since"
        return sorted([*settled.values(), *moving], key=lambda r: (-(r.start_time or 0), r.run_id))

    # ---- the file --------------------------------------------------------------------------------------
    def _load(self, now: float) -> tuple[dict[str, Read], float, float, list[str], list[str]] | None:
        try:
            data = json.loads(self.path.read_text())
            if (data["format"], data["uri"], data["experiment"]) != (FORMAT, self.uri, self.experiment_id):
                return None
            full_at, read_at = float(data["full_at"]), float(data["read_at"])
            if not 0 <= now - full_at < FULL_EVERY_S:
                return None
            runs = {r[0]: Read(r[0], "FINISHED", dict(r[1]), {k: float(v) for k, v in r[2].items()}, int(r[3]))
                    for r in data["runs"]}
            moving = [str(i) for i in data["moving"]]
            deleted = [str(i) for i in data["deleted"]]
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None  # none yet, or not one this version wrote whole: read everything again
        return runs, full_at, read_at, moving, deleted

    def _save(self, full_at: float, read_at: float, settled: dict[str, Read], moving: list[str],
              deleted: list[str]) -> None:
        data = {"format": FORMAT, "uri": self.uri, "experiment": self.experiment_id, "full_at": full_at,
                "read_at": read_at, "moving": moving, "deleted": list(deleted),
                "runs": [[r.run_id, r.tags, r.metrics, r.start_time] for r in settled.values()]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        except OSError:
            return  # a read-only work dir: the next read asks the store for everything, as before
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)  # a full disk: the kept file stays the last whole one
