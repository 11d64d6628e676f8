"""Where a run stands: one vocabulary (``State``) and one pure classifier.

Two sources decide a run's state: what MLflow holds of it
(``tracking.Tracked``: finished? its latest attempt's status, progress and
error) and what became of its job (``backends.JobState``: waiting, started or
ended, and how it ended). ``classify`` turns those two plain records into a
``RunState`` and touches neither SLURM nor MLflow, so every combination is
unit-tested in milliseconds (tests/test_status.py); ``states_of`` gathers the
two records of many runs (one MLflow query, one SLURM poll) and calls it.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Iterable

from reproduce.node.fingerprint import stale_because
from reproduce.node.run_lease import Claim, live_holder
from reproduce.tracking import Tracked

from reproduce.backends import JobState, Phase, Result

if TYPE_CHECKING:
    from reproduce.node.fingerprint import Today
    from reproduce.sweep.plan import Run


class State(str, Enum):
    PENDING = "pending"          # never submitted
    QUEUED = "queued"            # submitted, not training yet (or requeued)
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"            # its own code failed, or its user cancelled it
    INTERRUPTED = "interrupted"  # an MLflow run that no job holds any more
    CANCELLED = "cancelled"      # stopped by `reproduce cancel`; `reproduce run` submits it again
    KILLED = "killed"            # its job was stopped by the system; `reproduce run` submits it again
    UNKNOWN = "unknown"          # SLURM gave no usable answer this time (controller restarting, slurmdbd behind)

    __str__ = str.__str__
    __format__ = str.__format__


# Still to be waited for; an unknown job is asked about again, never resubmitted.
ACTIVE = frozenset({State.QUEUED, State.RUNNING, State.UNKNOWN})


@dataclass
class RunState:
    state: State
    detail: str = ""
    metrics: dict | None = None
    seconds_left: float | None = None  # a running row's estimate, from its recent rate
    stale: bool = False                # finished with code other than today's (see reproduce.node.fingerprint)
    finished_id: str = ""              # the finished MLflow run a FINISHED state stands on


def running_detail(progress: str, where: str, rate: float | None, loss: float | None) -> tuple[str, float | None]:
    """``iter 120/200, 2.5 it/s, 32 s left, loss 1.53 (SLURM job 42)`` and the seconds left."""
    parts, left = [f"iter {progress}"], None
    done, _, total = progress.partition("/")
    if rate and done.isdigit() and total.isdigit():
        left = (int(total) - int(done)) / rate
        parts += [f"{rate:.3g} it/s", f"{duration(left)} left"]
    if loss is not None:
        parts.append(f"loss {loss:.3g}")
    return f"{', '.join(parts)} ({where})", left


def duration(seconds: float) -> str:
    """4 s, 12 min, 3 h 05 min: what a person reads at a glance."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# How a SLURM job ends when the system, not the run, stopped it.
SYSTEM_ENDS = {"node_fail": "ended in NODE_FAIL", "boot_fail": "ended in BOOT_FAIL",
               "preempted": "was preempted and not requeued", "deadline": "reached its deadline"}


def killed_by_system(job: JobState, own_error: bool, my_uid: str | None = None) -> str:
    """Why a job that ended without finishing its run was stopped by the system
    (a dead node, a step SLURM killed while the node recovered, a cancel by
    slurmctld), or "" when the run failed in its own code or its user cancelled
    it. A job that died in its own code leaves an error: submitit's result
    pickle, or the MLflow run's failed state. One killed from outside leaves
    neither."""
    if own_error:
        return ""
    state = job.state.split()[0] if job.state else "ended"
    if state in SYSTEM_ENDS:
        return SYSTEM_ENDS[state]
    if state == "cancelled":
        by = job.state.split(" by ")[-1].strip() if " by " in job.state else ""
        me = my_uid if my_uid is not None else str(os.getuid())
        if not by or (by == job.slurm_uid and by != me):
            return "was cancelled by SLURM itself"
        return ""  # scancel by the user (or an admin)
    if state in ("failed", "ended") and job.result is None:
        return "was killed before it could report (no result, no error in MLflow)"
    return ""


def classify(tracked: Tracked, job: JobState | None, my_uid: str | None = None, code: str | None = None,
             elsewhere: Claim | None = None, now: float | None = None, data: str | None = None,
             libraries: str | None = None, stale_libraries: bool = False) -> RunState:
    """A run's state from its tracked run and its job.

    1. A finished MLflow run settles it, whatever the job says (``stale`` when
       ``code``, today's code fingerprint, or ``data``, today's annotations', is not
       the one it was trained with: ``stale_because``), unless ``job`` is a rerun of
       that stale run (``JobRecord.rerun_of``), which then says where the rerun is.
    2. No job: an MLflow run left behind is ``interrupted``, unless a live job of another
       work dir holds it (``elsewhere``, its claim in MLflow: ``run_lease``), when it is
       ``running`` there; nothing is ``pending``.
    3. A job still waiting is ``queued``; a started one is ``running``, except a
       local process still waiting for a free slot (its MLflow run not yet running).
       The job, not MLflow, decides: a run left RUNNING by a dead node's process
       must not read as running while SLURM holds the requeued job.
    4. An ended job that found its run held by another live job (``run_lock``) reads as
       that run: ``running`` while its MLflow run is, else ``killed`` (submitted again).
       Any other ended job is ``cancelled`` when ``reproduce cancel`` stopped it,
       ``killed`` when the system did, else ``failed``, with the error the run
       recorded or the end of its log.
    """
    if tracked.finished is not None:
        detail = f"AP {tracked.finished.get('AP', float('nan')):.1f}"
        why = stale_because(tracked, code, data, libraries if stale_libraries else None)
        stale = bool(why)
        newer = tracked.latest if tracked.latest is not None and tracked.latest.run_id != tracked.finished_id \
            else None
        if stale and job is not None and (job.phase is not Phase.ENDED or newer is not None
                                          or job.result is not Result.SUCCESS):
            # the job of a rerun of this stale run (`run --rerun-stale`; ``states_of`` passes no
            # other job of a finished run): it, and its own MLflow run once it has one, say
            # where the rerun is, unless it ended finding nothing to train
            return classify(Tracked(None, newer), job, my_uid)
        if stale:
            detail += f" (stale: {why}; `reproduce run --rerun-stale` retrains it)"
        elif libraries and tracked.finished_libs:
            from reproduce.node.fingerprint import library_changes
            changes = library_changes(tracked.finished_libs, libraries)
            if changes:  # shown, not called stale: this process's environment need not be the jobs'
                detail += f" (its job ran {changes} from here; --stale-libraries counts that as stale)"
        return RunState(State.FINISHED, detail, dict(tracked.finished), stale=stale,
                        finished_id=tracked.finished_id or "")
    latest = tracked.latest
    if job is None:
        if latest is not None and elsewhere is not None:
            age = (now if now is not None else time.time()) - elsewhere.time
            detail, left = running_detail(latest.progress, f"{elsewhere.who} in {elsewhere.work_dir}, a job "
                                          f"this work dir has no record of; heard from {duration(age)} ago", latest.rate,
                                          latest.loss)
            return RunState(State.RUNNING, detail, seconds_left=left)
        if latest is not None:
            return RunState(State.INTERRUPTED, f"MLflow run {latest.run_id[:8]} is {latest.status.lower()}, "
                            "no job holds it (`reproduce run` resumes it)")
        return RunState(State.PENDING)
    if job.phase is Phase.UNKNOWN:
        return RunState(State.UNKNOWN, job.note)
    progress = latest.progress if latest is not None else "starting"
    rate, loss = (latest.rate, latest.loss) if latest is not None else (None, None)
    if job.phase is Phase.WAITING:
        again = (f" (requeued after {earlier(job.earlier_states)}; it resumes from its last checkpoint)"
                 if job.earlier_states else "")
        return RunState(State.QUEUED, f"{job.where} {job.state}{again}")
    if job.phase is Phase.STARTED:
        if job.queued_until_tracked and (latest is None or latest.status != "RUNNING"):
            return RunState(State.QUEUED, f"{job.where} waiting for a free slot")
        detail, left = running_detail(progress, job.where, rate, loss)
        return RunState(State.RUNNING, detail, seconds_left=left)
    if job.result is Result.HELD:
        # Another live job holds the run's work dir and trains it; this job left it alone.
        if latest is not None and latest.status == "RUNNING":
            detail, left = running_detail(progress, f"another job holds it; job {job.job_id} left it", rate, loss)
            return RunState(State.RUNNING, detail, seconds_left=left)
        return RunState(State.KILLED, f"job {job.job_id} found the run held by another job, which has stopped; "
                        "`reproduce run` submits it again, resuming from its last checkpoint")
    if job.cancelled:
        return RunState(State.CANCELLED, f"job {job.job_id} cancelled by `reproduce cancel`; `reproduce run` "
                        "submits it again, resuming from its last checkpoint")
    if latest is not None and latest.state_tag == "storage":
        return RunState(State.KILLED, f"job {job.job_id} could not read its checkpoint ({last_lines(latest.error)}); "
                        "`reproduce run` submits it again, resuming from it")
    own_error = latest is not None and latest.state_tag in ("failed", "interrupted")
    why = killed_by_system(job, own_error, my_uid)
    if why:
        return RunState(State.KILLED, f"job {job.job_id} {why}; `reproduce run` submits it again, resuming from "
                        "its last checkpoint")
    reason = (latest.error if latest is not None else "") or job.log_tail
    cause = f"job {job.job_id} {job.state}"
    if job.state == "vanished":
        cause += " (SLURM keeps no record of it: an array task cancelled before it started)"
    return RunState(State.FAILED, f"{cause}: {last_lines(reason)}" if reason else cause)


def earlier(states: tuple[str, ...]) -> str:
    """A requeued job's earlier ends, each once with its count: 'node_fail, requeued (9 times)'."""
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    return ", ".join(s if n == 1 else f"{s} ({n} times)" for s, n in counts.items())


def states_of(tracked: dict[str, Tracked], mlruns: dict[str, list], records: dict[str, Any],
              today: "Today | None" = None, stale_libraries: bool = False) -> dict[str, RunState]:
    """``classify`` of many runs, by config hash: what the store says of each (``tracked``, and
    its MLflow runs, whose tags carry the leases), and their job records, with one poll of each
    backend for all their jobs (``backends.poll``); ``today``: the fingerprints a run trained
    now would record (``datasets.fingerprint_today``; None: read here, annotations unknown);
    ``stale_libraries``: other library versions than this process's make a run stale. What
    the node side knows (the leases) is read first, the jobs next, then each run is classified."""
    from reproduce import backends
    if today is None:
        from reproduce.node.fingerprint import today as fingerprints
        today = fingerprints("", None)
    code, data, libraries = today.code, today.data, today.libraries
    counted = libraries if stale_libraries else None
    # A finished run's job is not asked about, unless it is a rerun of that run, now stale: the
    # job that trained it may still be exiting, and is no rerun (it would read as one waiting).
    asking = {h: records[h] for h, tr in tracked.items() if records.get(h) is not None and (
        tr.finished is None or (records[h].rerun_of == tr.finished_id and stale_because(tr, code, data, counted)))}
    now = time.time()
    # a live job of another work dir (``run_lease``) training a run this work dir holds no job of
    elsewhere = {h: live_holder(mlruns.get(h, []), None, now) for h, tr in tracked.items()
                 if tr.finished is None and h not in asking}
    jobs = backends.poll(asking.values())  # one call per backend (one squeue and one sacct for SLURM)
    return {h: classify(tr, jobs[asking[h]] if h in asking else None, code=code,
                        elsewhere=elsewhere.get(h), now=now, data=data, libraries=libraries,
                        stale_libraries=stale_libraries)
            for h, tr in tracked.items()}


# ---- what is done about where runs stand -----------------------------------------------------------------
@dataclass
class Decision:
    """What to do with each run: it finished, its job is still on the way, or it needs a job."""
    finished: list["Run"] = field(default_factory=list)
    attached: list["Run"] = field(default_factory=list)
    todo: list["Run"] = field(default_factory=list)
    stale: list["Run"] = field(default_factory=list)  # finished with older code, retrained (in ``todo`` too)


def decide(runs: list["Run"], states: dict[str, RunState], rerun_stale: bool) -> Decision:
    """What ``reproduce run`` does with each run: nothing (finished), wait (submitted), or submit
    it (anything else; a stale finished run only with ``rerun_stale``)."""
    out = Decision()
    for run in runs:
        st = states[run.config_hash]
        if st.state == State.FINISHED and st.stale and rerun_stale:
            out.stale.append(run)
            out.todo.append(run)
        elif st.state == State.FINISHED:
            out.finished.append(run)
        elif st.state in ACTIVE:
            out.attached.append(run)
        else:
            out.todo.append(run)
    return out


def to_resubmit(views: Iterable[Any], max_requeues: int) -> list["Run"]:
    """The runs ``reproduce run`` submits again while it follows them: those whose job the system
    killed (a node failure, a step killed while its node recovered), each up to ``max_requeues``
    times (``JobRecord.resubmits``); a run the user's own code or cancel stopped is not."""
    return [v.run for v in views if v.state.state == State.KILLED and v.job is not None
            and v.job.resubmits < max_requeues]


# Which unsettled seed speaks for a row: the one a user must act on first.
URGENCY = (State.FAILED, State.KILLED, State.INTERRUPTED, State.CANCELLED, State.UNKNOWN, State.RUNNING,
           State.QUEUED, State.PENDING)


def row_state(unsettled: list[RunState], planned: int, first: RunState) -> tuple[State, str]:
    """A row of several seeds is finished once all are; until then it stands where its most
    urgent unsettled seed stands, and says how many seeds are done."""
    if not unsettled:
        return State.FINISHED, first.detail if planned == 1 else f"{planned}/{planned} seeds finished"
    lead = min(unsettled, key=lambda s: URGENCY.index(s.state) if s.state in URGENCY else len(URGENCY))
    if planned == 1:
        return lead.state, lead.detail
    done = planned - len(unsettled)
    return lead.state, f"{done}/{planned} seeds finished; {lead.state}" + (f": {lead.detail}" if lead.detail else "")


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b:?.*$")


def last_lines(text: str, n: int = 3) -> str:
    """The cause of a failure, on one line: every exception a traceback names
    (a chained one too: a time-out raised inside a library's own handler
    surfaces as that library's error), else the log's last lines."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = list(dict.fromkeys(ln for ln in lines if EXCEPTION_LINE.match(ln)))
    if errors:
        return " <- ".join(e[:300] for e in reversed(errors))
    return " | ".join(lines[-n:])
