"""The ``plan``, ``run`` and ``status`` commands."""
from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from reproduce import tracking
from reproduce.errors import UserError
from reproduce.node.payload import row_text
from reproduce.cli import plan_args
from reproduce.sweep.plan import Planner, Run
from reproduce.backends.records import JobStore
from reproduce.sweep.status import ACTIVE, State, duration, states_of
from reproduce.node.weights import prefetch, pretrained

if TYPE_CHECKING:
    from reproduce.sweep.submission import Submission

console = Console(stderr=True, highlight=False, soft_wrap=True)


def cmd_plan(args) -> int:
    from musu.core.switches import Switches
    profile, tables, runs = plan_args(args)
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
        switches = {name: run.options[Switches.config_path(name)] for name in Switches.names()
                    if Switches.config_path(name) in run.options}
        out.add_row(run.config_hash, "\n".join(row_text(r) for r in run.rows), run.config_name,
                    ", ".join(f"{k}={_short(v)}" for k, v in switches.items()) or "-", f"{run.gpu_hours:.1f}")
    Console(highlight=False).print(out)
    print(f"{len(runs)} runs ({sum(len(r.rows) for r in runs)} rows, {len(shared)} runs shared by several rows), "
          f"about {total:.1f} GPU-hours")
    return 0


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ---- status ---------------------------------------------------------------------------------------------
def cmd_status(args) -> int:
    profile, tables, runs = plan_args(args)
    uri = tracking.check(tracking.resolve_uri(args.tracking_uri, default_dir=args.workdir), read_only=True)
    mlruns = tracking.Tracker(uri).runs_by_hash(profile.name, {r.config_hash for r in runs})
    records = JobStore.at(args.workdir).records(profile.name)
    from reproduce.sweep.datasets import fingerprint_today
    states = states_of(mlruns, records, (r.config_hash for r in runs), fingerprint_today(profile, args.workdir, runs),
                       args.stale_libraries)
    by_row: dict[tuple[str, str], list[Run]] = {}  # a row of several seeds: one run each, each shown
    for run in runs:
        for t, row in run.rows:
            by_row.setdefault((t, row), []).append(run)
    if args.json:
        json.dump([dict(table=t.name, row=row.name, seed=run.seed, config_hash=run.config_hash,
                        state=states[run.config_hash].state, detail=states[run.config_hash].detail,
                        seconds_left=states[run.config_hash].seconds_left, stale=states[run.config_hash].stale)
                   for t in tables for row in t.rows for run in by_row.get((t.name, row.name), [])],
                  sys.stdout, indent=1)
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
            seeds = by_row[(table.name, row.name)]
            for run in seeds:
                st = states[run.config_hash]
                name = row.name if len(seeds) == 1 else f"{row.name} (seed {run.seed})"
                out.add_row(escape(name), run.config_hash, st.state, escape(st.detail))
        Console(highlight=False, width=160).print(out)
    counts = {}
    for st in states.values():
        counts[st.state] = counts.get(st.state, 0) + 1
    left = [st.seconds_left for st in states.values() if st.seconds_left is not None]
    print(", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
          + (f"; about {duration(max(left))} until the running rows finish" if left else ""))
    return 0


# ---- run ------------------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from reproduce.sweep import datasets
    from reproduce.backends import for_cluster
    from reproduce.backends.clusters import load_cluster
    from reproduce.sweep.submission import Submission, decide

    profile, tables, runs = plan_args(args)
    cluster = load_cluster(args.cluster)
    if args.parallel < 1:
        raise UserError(f"--parallel must be >= 1, got {args.parallel}")
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    uri = tracking.check(tracking.resolve_uri(args.tracking_uri, default_dir=args.workdir))
    gpu_ids = for_cluster(cluster).admit(profile, args.parallel)  # refused on one line before anything is sent
    tracker = tracking.Tracker(uri)
    store = JobStore.at(workdir)
    # Decide, submit and record under one lock: a second `reproduce run` sharing rows in this
    # work dir waits, then finds them submitted and reattaches.
    with store.submitting():
        data_root = datasets.prepare(profile, workdir)
        data = datasets.fingerprint_today(profile, workdir, runs)
        records = store.records(profile.name)
        states = states_of(tracker.runs_by_hash(profile.name, {r.config_hash for r in runs}), records,
                           (r.config_hash for r in runs), data, args.stale_libraries)
        plan = decide(runs, states, args.rerun_stale)
        console.print(f"[bold]{len(runs)}[/] runs for {', '.join(t.name for t in tables)} on profile "
                      f"[bold]{profile.name}[/]: {len(plan.finished)} finished, {len(plan.attached)} already "
                      f"submitted (reattaching), {len(plan.todo)} to submit to {cluster.name}"
                      + (f" ({len(plan.stale)} stale, retrained)" if plan.stale else ""))
        stale_left = sum(states[r.config_hash].stale for r in plan.finished)
        if stale_left:
            console.print(f"[yellow]{stale_left} finished run(s) were trained with older code or on other "
                          f"annotations{' or libraries' if args.stale_libraries else ''}[/]; "
                          "`reproduce run --rerun-stale` retrains them")
        submission = Submission(profile, cluster, workdir, uri, data_root,
                                cluster.torch_home(workdir), args.parallel, tuple(gpu_ids),
                                {r.config_hash: states[r.config_hash].finished_id for r in plan.stale},
                                args.stale_libraries)
        submission.set_stale_aside(plan.stale)
        # Compute nodes may have no internet: every weight file the runs to submit
        # name is fetched here, now; the jobs read this cache and never download.
        planner = Planner(profile)
        prefetch([name for run in plan.todo for name in pretrained(planner.resolve(run.config_name, run.options))],
                 submission.torch_home)
        for h, job in submission.submit(plan.todo, records).items():
            console.print(f"submitted {h} as {job.backend} job {job.job_id}")
    if args.no_wait:
        console.print("submitted; follow with `reproduce status`, or `reproduce run` again to wait")
        return 0
    return follow(runs, profile.name, tracker, store, args.poll, submission, cluster.max_requeues, data,
                  args.stale_libraries)


COLOURS = {State.FINISHED: "green", State.FAILED: "red", State.RUNNING: "cyan"}


def _rows_text(run: Run) -> str:
    return ", ".join(row_text(r) for r in run.rows[:3]) + (" ..." if len(run.rows) > 3 else "")


def progress_table(runs: list[Run], states: dict[str, Any], elapsed: float) -> RichTable:
    """The live view of `run` on a terminal: one line a run, and the time left in all."""
    left = [s.seconds_left for s in states.values() if s.seconds_left is not None]
    finished = sum(s.state == State.FINISHED for s in states.values())
    caption = f"{finished}/{len(runs)} finished, {duration(elapsed)} so far" + \
        (f", about {duration(sum(left))} of training left" if left else "")
    table = RichTable(caption=caption, caption_justify="left", expand=False)
    for col in ("run", "rows", "state", "detail"):
        table.add_column(col, overflow="fold")
    for run in runs:
        st = states[run.config_hash]
        colour = COLOURS.get(st.state, "yellow")
        table.add_row(run.config_hash, escape(_rows_text(run)), f"[{colour}]{st.state}[/]", escape(st.detail))
    return table


def follow(runs: list[Run], profile: str, tracker: tracking.Tracker, store: JobStore, poll: float,
           submission: Submission | None = None, max_requeues: int = 0, data: str | None = None,
           stale_libraries: bool = False) -> int:
    """Wait for every run, showing progress; exit 1 if any failed.

    On a terminal the progress is a live table (rich) redrawn every poll;
    otherwise (a pipe, a log file, a CI job) a plain line per change of state.
    A run whose job the system killed (``killed``: a node failure, a step
    killed while its node recovered) is no failure of the run: it is submitted
    again, resuming from its last checkpoint, up to ``max_requeues`` times.
    """
    from rich.live import Live
    last: dict[str, str] = {}
    start = time.time()
    live = Live(console=console, refresh_per_second=1, auto_refresh=False) if console.is_terminal else None
    if live is not None:
        live.start()
    try:
        while True:
            records = store.records(profile)
            mlruns = tracker.runs_by_hash(profile, {r.config_hash for r in runs})
            states = states_of(mlruns, records, (r.config_hash for r in runs), data, stale_libraries)
            if live is not None:
                live.update(progress_table(runs, states, time.time() - start), refresh=True)
            else:
                for run in runs:
                    st = states[run.config_hash]
                    line = f"{st.state}: {st.detail}" if st.detail else st.state
                    if last.get(run.config_hash) != line:
                        colour = COLOURS.get(st.state, "yellow")
                        console.print(f"[{colour}]{run.config_hash}[/] {escape(_rows_text(run))}: {escape(line)}")
                        last[run.config_hash] = line
            killed = [r for r in runs if states[r.config_hash].state == State.KILLED]
            again = [r for r in killed if r.config_hash in records and records[r.config_hash].resubmits < max_requeues]
            if again and submission is not None:
                for h, job in submission.resubmit(again, records).items():
                    console.print(f"resubmitted {h} as {job.backend} job {job.job_id}: its job was killed by the "
                                  "system, it resumes from its last checkpoint")
                time.sleep(poll)
                continue
            active = [h for h, s in states.items() if s.state in ACTIVE]
            if not active:
                break
            time.sleep(poll)
    finally:
        if live is not None:
            live.stop()
    failed = [h for h, s in states.items() if s.state != State.FINISHED]
    done = len(runs) - len(failed)
    console.print(f"[bold]{done}/{len(runs)} finished[/] in {time.time() - start:.0f} s"
                  + (f", {len(failed)} not finished: {', '.join(failed)}" if failed else ""))
    for h in failed:  # what the live view showed last, kept on screen
        if live is not None:
            console.print(f"[red]{h}[/] {states[h].state}: {escape(states[h].detail)}")
    return 1 if failed else 0
