"""The ``plan``, ``run`` and ``status`` commands."""
from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from . import tracking
from .errors import UserError
from .plan import Planner, Run, dataset_options
from .profiles import load_profile
from .weights import prefetch, pretrained
from .spec import SWEEPS_DIR, load_tables

console = Console(stderr=True, highlight=False, soft_wrap=True)


def _plan(args) -> tuple[Any, list, list[Run]]:
    sweeps = args.sweeps or SWEEPS_DIR
    profile = load_profile(args.profile, sweeps)
    tables = load_tables(args.tables, sweeps)
    return profile, tables, Planner(profile).plan(tables)


def cmd_plan(args) -> int:
    profile, tables, runs = _plan(args)
    total = sum(r.gpu_hours for r in runs)
    shared = [r for r in runs if len(r.rows) > 1]
    if args.json:
        json.dump(dict(profile=profile.name, tables=[t.name for t in tables], runs=[r.to_json() for r in runs],
                       total_runs=len(runs), total_gpu_hours=round(total, 2),
                       rows=sum(len(r.rows) for r in runs), shared_runs=len(shared)), sys.stdout, indent=1)
        print()
        return 0
    out = RichTable(title=f"{', '.join(t.name for t in tables)} on profile {profile.name}")
    for col in ("hash", "rows", "config", "overrides", "GPU-h"):
        out.add_column(col)
    for run in runs:
        switches = {k.rsplit(".", 1)[-1]: v for k, v in run.options.items() if k.startswith("model.bbox_head")}
        out.add_row(run.config_hash, "\n".join(f"{t}/{r}" for t, r in run.rows), run.config_name,
                    ", ".join(f"{k}={_short(v)}" for k, v in switches.items()) or "-", f"{run.gpu_hours:.1f}")
    Console(highlight=False).print(out)
    print(f"{len(runs)} runs ({sum(len(r.rows) for r in runs)} rows, {len(shared)} runs shared by several rows), "
          f"about {total:.1f} GPU-hours")
    return 0


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ---- status ---------------------------------------------------------------------------------------------
@dataclass
class RunState:
    state: str  # pending | queued | running | finished | failed | interrupted
    detail: str = ""
    metrics: dict | None = None


def state_of(run: Run, mlruns: list, record: dict | None) -> RunState:
    """Where a run stands, from MLflow (finished?) and its job (queued, running, ended).

    The job's own state decides between queued and running: an MLflow run left
    RUNNING by a process that died (a node failure) must not read as running
    while SLURM holds the requeued job.
    """
    from .executor import PENDING_SLURM, RUNNING_SLURM, job_log_tail, pid_alive, slurm_history, slurm_state
    done = tracking.finished_run(mlruns)
    if done is not None:
        return RunState("finished", f"AP {done.data.metrics.get('AP', float('nan')):.1f}", dict(done.data.metrics))
    latest = mlruns[0] if mlruns else None
    if record is None:
        if latest is not None:
            return RunState("interrupted", f"MLflow run {latest.info.run_id[:8]} is {latest.info.status.lower()}, "
                            "no job holds it (`reproduce run` resumes it)")
        return RunState("pending")
    job = record["job_id"]
    progress = latest.data.tags.get(tracking.TAG_PROGRESS, "starting") if latest is not None else "starting"
    if record.get("backend") == "local":
        if pid_alive(int(job)):
            if latest is not None and latest.info.status == "RUNNING":
                return RunState("running", f"iter {progress} (local job {job})")
            return RunState("queued", f"local job {job} waiting for a free slot")
        sstate = "ended"
    else:
        full_state = slurm_state(record)
        sstate = full_state.split()[0]
        if sstate in PENDING_SLURM:
            earlier = [h.lower() for h in slurm_history(record)[:-1] if h not in ("PENDING", "RUNNING")]
            again = f" (requeued after {', '.join(earlier)}; it resumes from its last checkpoint)" if earlier else ""
            return RunState("queued", f"SLURM job {job} {sstate.lower()}{again}")
        if sstate in RUNNING_SLURM:
            return RunState("running", f"iter {progress} (SLURM job {job})")
        sstate = full_state.lower()
    own_error = latest is not None and latest.data.tags.get(tracking.TAG_STATE) in ("failed", "interrupted")
    why = killed_by_system(record, sstate, own_error)
    if why:
        return RunState("killed", f"job {job} {why}; `reproduce run` submits it again, resuming from its last "
                        "checkpoint")
    reason = latest.data.tags.get(tracking.TAG_ERROR, "") if latest is not None else ""
    reason = reason or job_log_tail(record)
    cause = f"job {job} {sstate}"
    return RunState("failed", f"{cause}: {_last_lines(reason)}" if reason else cause)


# How a SLURM job ends when the system, not the run, stopped it.
SYSTEM_ENDS = {"node_fail": "ended in NODE_FAIL", "boot_fail": "ended in BOOT_FAIL",
               "preempted": "was preempted and not requeued", "deadline": "reached its deadline"}


def killed_by_system(record: dict, end_state: str, own_error: bool) -> str:
    """Why a job that ended without finishing its run was stopped by the system
    (a dead node, a step SLURM killed while the node recovered, a cancel by
    slurmctld), or "" when the run failed in its own code or its user cancelled
    it. A job that died in its own code leaves an error: submitit's result
    pickle, or the MLflow run's failed state. One killed from outside leaves
    neither."""
    from .executor import job_result_state, slurm_user_uid
    if own_error:
        return ""
    state = end_state.split()[0].lower() if end_state else "ended"
    if state in SYSTEM_ENDS:
        return SYSTEM_ENDS[state]
    if state == "cancelled":
        by = end_state.split(" by ")[-1].strip() if " by " in end_state else ""
        if not by or (by == slurm_user_uid() and by != str(os.getuid())):
            return "was cancelled by SLURM itself"
        return ""  # scancel by the user (or an admin)
    if state in ("failed", "ended") and job_result_state(record) is None:
        return "was killed before it could report (no result, no error in MLflow)"
    return ""


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b:?.*$")


def _last_lines(text: str, n: int = 3) -> str:
    """The cause of a failure, on one line: every exception a traceback names
    (a chained one too: a time-out raised inside a library's own handler
    surfaces as that library's error), else the log's last lines."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = list(dict.fromkeys(ln for ln in lines if EXCEPTION_LINE.match(ln)))
    if errors:
        return " <- ".join(e[:300] for e in reversed(errors))
    return " | ".join(lines[-n:])


def _store(workdir: Path):
    from .state import JobStore
    return JobStore(workdir / ".reproduce" / "state")


def _profile_records(store, profile: str) -> dict[str, Any]:
    return {k.split(":", 1)[1]: v for k, v in store.load().items() if k.startswith(profile + ":")}


def cmd_status(args) -> int:
    profile, tables, runs = _plan(args)
    uri = tracking.check(_default_uri(args))
    cl = tracking.client(uri)
    mlruns = tracking.runs_by_hash(cl, profile.name, {r.config_hash for r in runs})
    records = _profile_records(_store(args.workdir), profile.name)
    states = {r.config_hash: state_of(r, mlruns.get(r.config_hash, []), records.get(r.config_hash)) for r in runs}
    by_row = {}
    for run in runs:
        for t, row in run.rows:
            by_row[(t, row)] = (run, states[run.config_hash])
    if args.json:
        json.dump([dict(table=t.name, row=row.name, config_hash=by_row[(t.name, row.name)][0].config_hash,
                        state=by_row[(t.name, row.name)][1].state, detail=by_row[(t.name, row.name)][1].detail)
                   for t in tables for row in t.rows if (t.name, row.name) in by_row], sys.stdout, indent=1)
        print()
        return 0
    for table in tables:
        out = RichTable(title=f"{table.name} ({profile.name})")
        for col in ("row", "hash", "state", "detail"):
            out.add_column(col)
        for row in table.rows:
            if (table.name, row.name) not in by_row:
                out.add_row(row.name, "-", "reference", "paper row, not trained")
                continue
            run, st = by_row[(table.name, row.name)]
            out.add_row(escape(row.name), run.config_hash, st.state, escape(st.detail))
        Console(highlight=False, width=160).print(out)
    counts = {}
    for st in states.values():
        counts[st.state] = counts.get(st.state, 0) + 1
    print(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0


def local_gpu_ids() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES names them: the caller's own list where it set one."""
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    given = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return given[:count] if given else [str(i) for i in range(count)]


def local_gpus() -> int:
    return len(local_gpu_ids())


def require_local_gpus(profile, cluster) -> None:
    """A GPU profile on ``--cluster local`` needs that many GPUs here (torch imported only for GPU profiles)."""
    if cluster.is_local and profile.gpus and profile.gpus > local_gpus():
        raise UserError(f"profile {profile.name!r} trains each run on {profile.gpus} GPU(s) and this machine has "
                        f"{local_gpus()}", hint="use a cluster profile with GPUs (--cluster NAME), or a profile "
                        "with gpus: 0")


def _default_uri(args) -> str:
    return tracking.resolve_uri(args.tracking_uri, default_dir=args.workdir)


# ---- run ------------------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from . import datasets
    from .clusters import check_against_slurm, load_cluster
    from .executor import submit

    profile, tables, runs = _plan(args)
    cluster = load_cluster(args.cluster)
    if args.parallel < 1:
        raise UserError(f"--parallel must be >= 1, got {args.parallel}")
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    uri = tracking.check(_default_uri(args))
    gpus = profile.gpus
    if cluster.is_local and profile.processes > 1:
        raise UserError(f"profile {profile.name!r} trains each run in {profile.processes} processes; --cluster local "
                        "runs one", hint="use a SLURM cluster profile, or a profile with one process per run")
    require_local_gpus(profile, cluster)
    gpu_ids = local_gpu_ids() if cluster.is_local and gpus else []
    if gpu_ids and gpus * args.parallel > len(gpu_ids):
        raise UserError(f"--parallel {args.parallel} trains {args.parallel} runs of {gpus} GPU(s) at once and this "
                        f"machine has {len(gpu_ids)}", hint=f"use --parallel {len(gpu_ids) // gpus}")
    check_against_slurm(cluster, gpus)
    data_root = datasets.prepare(profile, workdir)
    cl = tracking.client(uri)
    mlruns = tracking.runs_by_hash(cl, profile.name, {r.config_hash for r in runs})
    store = _store(workdir)
    records = _profile_records(store, profile.name)

    finished, attached, todo = [], [], []
    for run in runs:
        st = state_of(run, mlruns.get(run.config_hash, []), records.get(run.config_hash))
        if st.state == "finished":
            finished.append(run)
        elif st.state in ("running", "queued"):
            attached.append(run)
        else:
            todo.append(run)
    console.print(f"[bold]{len(runs)}[/] runs for {', '.join(t.name for t in tables)} on profile "
                  f"[bold]{profile.name}[/]: {len(finished)} finished, {len(attached)} already submitted "
                  f"(reattaching), {len(todo)} to submit to {cluster.name}")
    abs_data = dataset_options(profile, data_root)
    # Compute nodes may have no internet: every weight file the runs to submit
    # name is fetched here, now; the jobs read this cache and never download.
    torch_home = cluster.torch_home(workdir)
    planner = Planner(profile)
    prefetch([name for run in todo for name in pretrained(planner.resolve(run.config_name, run.options))],
             torch_home)
    work = workdir / ".reproduce" / "submitit"

    def payload(run: Run) -> dict:
        return dict(config_hash=run.config_hash, config=run.config_name, options={**run.options, **abs_data},
                    profile=profile.name, rows=[f"{t}/{r}" for t, r in run.rows], seed=run.seed,
                    tracking_uri=uri, work_dir=str(workdir / "work_dirs" / profile.name / run.config_hash),
                    launcher="slurm" if profile.processes > 1 else "none", gpus=gpus,
                    processes=profile.processes, torch_home=str(torch_home),
                    slot_dir=str(workdir / ".reproduce" / "slots"), slots=args.parallel, local_gpu_ids=gpu_ids)

    def resubmit(again: list[Run], records: dict[str, Any]) -> None:
        """Submit ``again`` (each counted against the cluster's ``max_requeues``)."""
        submitted = submit(cluster, work, [payload(r) for r in again], gpus, profile.processes)
        store.update({f"{profile.name}:{s.config_hash}": {
            **s.record(), "resubmits": (records.get(s.config_hash) or {}).get("resubmits", 0) + 1}
            for s in submitted})
        for s in submitted:
            console.print(f"resubmitted {s.config_hash} as {s.backend} job {s.job_id}: its job was killed by the "
                          "system, it resumes from its last checkpoint")

    submitted = submit(cluster, work, [payload(r) for r in todo], gpus, profile.processes)
    store.update({f"{profile.name}:{s.config_hash}": s.record() for s in submitted})
    for s in submitted:
        console.print(f"submitted {s.config_hash} as {s.backend} job {s.job_id}")
    if args.no_wait:
        console.print("submitted; follow with `reproduce status`, or `reproduce run` again to wait")
        return 0
    return follow(runs, profile.name, cl, store, args.poll, resubmit, cluster.max_requeues)


def follow(runs: list[Run], profile: str, cl, store, poll: float, resubmit=None, max_requeues: int = 0) -> int:
    """Wait for every run, printing each change of state; exit 1 if any failed.

    A run whose job the system killed (``killed``: a node failure, a step
    killed while its node recovered) is no failure of the run: it is submitted
    again, resuming from its last checkpoint, up to ``max_requeues`` times.
    """
    last: dict[str, str] = {}
    start = time.time()
    while True:
        records = _profile_records(store, profile)
        mlruns = tracking.runs_by_hash(cl, profile, {r.config_hash for r in runs})
        states = {r.config_hash: state_of(r, mlruns.get(r.config_hash, []), records.get(r.config_hash))
                  for r in runs}
        for run in runs:
            st = states[run.config_hash]
            line = f"{st.state}: {st.detail}" if st.detail else st.state
            if last.get(run.config_hash) != line:
                rows = ", ".join(f"{t}/{r}" for t, r in run.rows[:3]) + (" ..." if len(run.rows) > 3 else "")
                colour = {"finished": "green", "failed": "red", "running": "cyan"}.get(st.state, "yellow")
                console.print(f"[{colour}]{run.config_hash}[/] {escape(rows)}: {escape(line)}")
                last[run.config_hash] = line
        killed = [r for r in runs if states[r.config_hash].state == "killed"]
        again = [r for r in killed if (records.get(r.config_hash) or {}).get("resubmits", 0) < max_requeues]
        if again and resubmit is not None:
            resubmit(again, records)
            time.sleep(poll)
            continue
        active = [h for h, s in states.items() if s.state in ("running", "queued")]
        if not active:
            failed = [h for h, s in states.items() if s.state != "finished"]
            done = len(runs) - len(failed)
            console.print(f"[bold]{done}/{len(runs)} finished[/] in {time.time() - start:.0f} s"
                          + (f", {len(failed)} not finished: {', '.join(failed)}" if failed else ""))
            return 1 if failed else 0
        time.sleep(poll)
