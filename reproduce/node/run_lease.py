"""One live job per config across work dirs that share a tracking store: a lease in MLflow.

``run_lock`` keeps two jobs of one work dir apart with a ``flock`` on its
files. Two work dirs logging to one tracking server (a laptop and a cluster
login node, two checkouts of one user) share no file, only the store. So a
job also takes the config there, on an operation the store makes atomic,
never on waiting:

1. **Look.** A RUNNING run of the config carrying a *live* claim of another
   work dir (its tag, heartbeat younger than ``FRESH_S``) is held: leave it.
   A fast answer, and what ``status`` shows as "running in another work dir".
2. **Take a generation.** The lease of a config is a registered model named
   ``musu-lease.PROFILE.HASH.GENERATION`` (MLflow lets a name exist once: a
   unique key in its SQL store, through a server too). The newest
   generation's tags say who holds it, from which work dir, and when it
   last beat. If it is live and another work dir's, leave; otherwise
   create the next generation. Of any number of jobs creating it at once,
   with any latency, exactly one succeeds; the others read who did.
3. **Check again.** The run may have finished between this job's first look
   and its lease (``done``): then nothing is trained.

The holder's heartbeat is a thread (``Heartbeat``) that beats every ``BEAT_S``
through every phase of the job (training, evaluation, the test-dev pass,
Table 7's measurement). Each beat also fences: when a newer generation
exists, or this job's is gone (it stopped beating for ``FRESH_S`` and another
work dir took the config), the job has lost the lease and stops
(``LeaseLost``) instead of training beside the new holder.

A job that ends releases its generation. One that SLURM requeues marks it
``requeued``: another work dir leaves it for ``REQUEUED_S`` while the job
waits in the queue, and the requeued attempt, of the same work dir, takes the
next generation. Claims of this job's own work dir are the flock's business
and are ignored here. Times come from each host's clock: ``FRESH_S`` is
minutes, far above clock skew.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Mapping

from reproduce import tracking

TAG_CLAIM = "musu.claim."  # + token
LEASE = "musu-lease."      # + PROFILE.HASH.GENERATION: a registered model's name
FRESH_S = 900.0            # a lease not refreshed for this long is a dead job's
BEAT_S = 60.0              # how often the holder's heartbeat goes out, whatever the job is doing
REQUEUED_S = 24 * 3600.0   # how long a requeued job's lease is left to it while it waits in the queue


class LeaseLost(RuntimeError):
    """Another work dir took the config while this job held it (this job stopped beating)."""


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
                 clock: Callable[[], float] = time.time) -> None:
        self.tracker, self.profile, self.config_hash = tracker, profile, config_hash
        self.work_dir, self.who, self.clock = str(work_dir), who, clock
        self.token = uuid.uuid4().hex
        self.run_id: str | None = None
        self.generation: int | None = None  # the generation this job holds
        self.lost: str | None = None        # who took the config from this job, once it has
        self.requeue_asked = False          # the backend's requeue signal came (``job.run_training``)
        self.finished_meanwhile: str | None = None  # the MLflow run that finished the config during step 2
        safe = profile if re.fullmatch(r"[A-Za-z0-9_-]+", profile) else hashlib.sha256(profile.encode()).hexdigest()[:12]
        self.prefix = f"{LEASE}{safe}.{config_hash}."

    def _claim_tag(self) -> dict[str, str]:
        return {TAG_CLAIM + self.token: json.dumps({"dir": self.work_dir, "who": self.who, "t": self.clock()})}

    def look(self) -> Claim | None:
        """Step 1: the live claim of another work dir on this config, if any."""
        return live_holder(self.tracker.runs_of(self.profile, self.config_hash), self.work_dir, self.clock())

    def acquire(self, done: Callable[[], str | None] | None = None) -> str | None:
        """Steps 1 to 3, before this job opens a run: None when it now holds the config, else who
        does. ``done``: the MLflow run that finished the config meanwhile, if one did (then this
        job holds nothing and says so). A job that loses has made nothing to clean up."""
        if not self.tracker.writes:
            return None  # a non-zero rank: rank 0 decides for the job
        holder = self.look()
        if holder is not None:
            return holder.who
        who = self._take()
        if who is None and done is not None:
            self.finished_meanwhile = done()
            if self.finished_meanwhile is not None:
                self.release()
                return f"nobody: it finished meanwhile (MLflow run {self.finished_meanwhile})"
        return who

    def hold(self, run_id: str | None) -> None:
        """The run this job trains, once it holds the config: its claim there is what ``status``
        of another work dir shows (and what step 1 reads first)."""
        if self.generation is not None and run_id is not None:
            self.run_id = run_id
            self.tracker.tag(run_id, self._claim_tag())

    # --- generations --------------------------------------------------------------------------------
    def _generations(self) -> dict[int, dict[str, str]]:
        out = {}
        for name, tags in self.tracker.names(self.prefix).items():
            tail = name[len(self.prefix):]
            if tail.isdigit():
                out[int(tail)] = tags
        return out

    def _held_by_another(self, tags: dict[str, str]) -> bool:
        """Whether a generation's holder, of another work dir, still holds the config."""
        if tags.get("dir") == self.work_dir or tags.get("state") == "released":
            return False
        try:
            age = self.clock() - float(tags.get("t", "0"))
        except ValueError:
            return False
        return age < (REQUEUED_S if tags.get("state") == "requeued" else FRESH_S)

    def _take(self) -> str | None:
        """Step 2: create the next generation; None when this job made it, else who holds it."""
        for _ in range(8):  # each lost create means another job made that generation: read who
            generations = self._generations()
            top = max(generations, default=0)
            if top and self._held_by_another(generations[top]):
                return generations[top].get("who") or "a job of another work dir"
            tags = {"token": self.token, "dir": self.work_dir, "who": self.who, "t": repr(self.clock()),
                    "state": "holding"}
            if self.tracker.create_name(f"{self.prefix}{top + 1:06d}", tags):
                self.generation = top + 1
                if top - 1 in generations:  # two generations kept: a stale holder of the last one sees this one
                    self.tracker.delete_name(f"{self.prefix}{top - 1:06d}")
                return None
        return "another job (the lease changed hands too often to read)"

    def _name(self) -> str:
        return f"{self.prefix}{self.generation:06d}"

    # --- holding ----------------------------------------------------------------------------------
    def beat(self) -> dict[str, str]:
        """Refresh this job's lease, after checking it still holds it (``LeaseLost`` when not); the
        tags that refresh its claim on the run, for ``status``."""
        if self.generation is None:
            return {}
        generations = self._generations()
        mine, top = generations.get(self.generation), max(generations, default=0)
        if mine is None or mine.get("token") != self.token or top > self.generation:
            newer = generations.get(top, {})
            self.lost = newer.get("who") or "a job of another work dir"
            raise LeaseLost(f"the lease on {self.config_hash} was taken by {self.lost} (this job's heartbeat "
                            f"stopped for more than {FRESH_S:.0f} s); this job stops training")
        self.tracker.tag_name(self._name(), {"t": repr(self.clock())})
        return self._claim_tag()

    def claim_tags(self) -> dict[str, str]:
        """The run's claim tag, refreshed with its progress (no store query of its own)."""
        return self._claim_tag() if self.run_id is not None else {}

    def release(self, requeued: bool = False) -> None:
        """The job ends: the config is free, or, requeued, left to this job while it waits (``REQUEUED_S``)."""
        if self.generation is None:
            return
        try:
            self.tracker.tag_name(self._name(), {"state": "requeued" if requeued else "released",
                                                 "t": repr(self.clock())})
        except Exception:  # noqa: BLE001 - a store that is gone: the lease goes stale by itself (FRESH_S)
            pass
        self.generation = None


class Heartbeat:
    """The holder's heartbeat, every ``every_s`` whatever the job is doing (``Lease.beat``); a lost
    lease is kept in ``lease.lost`` for the training loop to stop at its next iteration."""

    def __init__(self, lease: Lease, run_id: str | None, every_s: float = BEAT_S) -> None:
        self.lease, self.run_id, self.every_s = lease, run_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="musu-lease-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        if self.lease.generation is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        # A store that cannot be reached is waited for (training goes on, as without a lease): a
        # job stops only on seeing a newer generation, never for a silence it cannot interpret.
        while not self._stop.wait(self.every_s):
            try:
                self.lease.tracker.tag(self.run_id, self.lease.beat())
            except LeaseLost:
                return  # ``lease.lost`` says who: the training loop stops
            except Exception:  # noqa: BLE001 - a store that hiccups: the next beat tries again
                continue
