"""One live job per config across work dirs that share a tracking store: a lease in MLflow.

``run_lock`` keeps two jobs of one work dir apart with a ``flock`` on its
files. Two work dirs logging to one tracking server (a laptop and a cluster
login node, two checkouts of one user) share no file, only the store. So a
job also claims its config there, in the tags of the config's MLflow run:

1. **Look.** A RUNNING run of the config carrying a *live* claim from another
   work dir (its heartbeat younger than ``FRESH_S``) is held: leave it.
2. **Claim.** Write this job's own claim, a tag of its own
   (``musu.claim.<token>``: work dir, who, time), so that two claimers never
   overwrite each other.
3. **Settle, then read back.** After ``SETTLE_S`` (or three times what this
   job's look-and-write took, if longer: a store slow for one job is slow
   for its rivals) every claimer that looked before this claim landed has
   written its own; each sees all live claims
   of the config (on its run, or on a run of its own that a concurrent
   ``create_run`` made) and the smallest token wins, the same answer for all.
   A loser withdraws its claim, deletes the empty run it created, if any, and
   leaves the run to the winner.

The holder refreshes its claim's time (its heartbeat) as it logs progress, so
a job that dies leaves a claim that goes stale within ``FRESH_S`` and the
config is free again. Claims of this job's own work dir are the flock's
business and are ignored here (a requeued attempt sees its predecessor's).
Times come from each host's clock: ``FRESH_S`` is minutes, far above clock skew.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Mapping

from reproduce import tracking

TAG_CLAIM = "musu.claim."  # + token
FRESH_S = 900.0    # a claim not refreshed for this long is a dead job's (above any evaluation's silence)
SETTLE_S = 1.0     # how long a claimer waits for concurrent claims to land before reading them back


@dataclass(frozen=True)
class Claim:
    token: str
    work_dir: str
    who: str
    time: float

    def live(self, now: float, fresh_s: float = FRESH_S) -> bool:
        return now - self.time < fresh_s


def claims(tags: Mapping[str, str]) -> list[Claim]:
    """The claims in a run's tags (malformed ones are nobody's)."""
    out = []
    for key, value in tags.items():
        if key.startswith(TAG_CLAIM):
            try:
                data = json.loads(value)
                out.append(Claim(key[len(TAG_CLAIM):], str(data["dir"]), str(data["who"]), float(data["t"])))
            except (ValueError, KeyError, TypeError):
                continue
    return out


def live_holder(runs: list[tracking.TrackedRun], work_dir: str | None, now: float, fresh_s: float = FRESH_S
                ) -> Claim | None:
    """The live claim on a RUNNING run of the config (the first by token) of a work dir other than
    ``work_dir`` (None: of any), if any."""
    found = [c for run in runs if run.status == "RUNNING" for c in claims(run.tags)
             if c.work_dir != work_dir and c.live(now, fresh_s)]
    return min(found, key=lambda c: c.token) if found else None


class Lease:
    """``acquire(run_id)`` -> None when this job now holds the config, else who does."""

    def __init__(self, tracker: tracking.Tracker, profile: str, config_hash: str, work_dir: str, who: str,
                 settle_s: float = SETTLE_S, clock: Callable[[], float] = time.time) -> None:
        self.tracker, self.profile, self.config_hash = tracker, profile, config_hash
        self.work_dir, self.who, self.settle_s, self.clock = str(work_dir), who, settle_s, clock
        self.token = uuid.uuid4().hex
        self.run_id: str | None = None

    def _claim_tag(self) -> dict[str, str]:
        return {TAG_CLAIM + self.token: json.dumps({"dir": self.work_dir, "who": self.who, "t": self.clock()})}

    def look(self) -> Claim | None:
        """Step 1: the live claim of another work dir on this config, if any."""
        return live_holder(self.tracker.runs_of(self.profile, self.config_hash), self.work_dir, self.clock())

    def acquire(self, run_id: str | None) -> str | None:
        """Steps 1 to 3 on ``run_id`` (the run this job opened)."""
        if not self.tracker.writes or run_id is None:
            return None  # a non-zero rank: rank 0 decides for the job
        start = self.clock()
        holder = self.look()
        if holder is not None:
            self._leave(run_id, None)
            return holder.who
        self.tracker.tag(run_id, self._claim_tag())
        # A store slow to answer this job is slow for its rivals too: wait longer than they take.
        time.sleep(max(self.settle_s, 3 * (self.clock() - start)))
        runs = self.tracker.runs_of(self.profile, self.config_hash)
        mine = any(c.token == self.token for run in runs for c in claims(run.tags))
        rival = live_holder(runs, self.work_dir, self.clock())
        if mine and (rival is None or self.token < rival.token):
            self.run_id = run_id
            return None
        self._leave(run_id, self.token)
        return rival.who if rival is not None else "another job (this job's claim did not come back)"

    def beat(self) -> dict[str, str]:
        """The tags that refresh this job's claim: log them with the run's progress."""
        return self._claim_tag() if self.run_id is not None else {}

    def _leave(self, run_id: str, token: str | None) -> None:
        """Withdraw this job's claim; a run this job created and never trained is deleted."""
        if token is not None:
            self.tracker.delete_tag(run_id, TAG_CLAIM + token)
        run = self.tracker.run(run_id)
        if run.status == "RUNNING" and tracking.TAG_PROGRESS not in run.tags and \
                run.tags.get(tracking.TAG_STATE) in (None, "running") and not claims(run.tags):
            self.tracker.delete_run(run_id)
