"""``reproduce run TABLE``: train what is not finished yet, and follow it."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from reproduce.node.payload import row_text
from reproduce.node.weights import prefetch
from reproduce.sweep.plan import Run
from reproduce.sweep.status import ACTIVE, State, decide, duration, to_resubmit
from reproduce.sweep.sweep import RunView, Sweep

if TYPE_CHECKING:
    from reproduce.sweep.submission import Submission

console = Console(stderr=True, highlight=False, soft_wrap=True)


def cmd_run(args) -> int:
    from reproduce.backends.clusters import load_cluster
    from reproduce.sweep import datasets
    from reproduce.sweep.submission import Submission

    sweep = Sweep.from_args(args)
    profile, runs = sweep.profile, sweep.runs
    cluster = load_cluster(args.cluster)
    workdir = sweep.workdir
    # refused on one line before anything is made or sent
    gpu_ids = cluster.backend.admit(profile, args.parallel, workdir=workdir)
    torch_home = cluster.torch_home(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    uri = sweep.uri(read_only=False)
    # Decide, submit and record under one lock: a second `reproduce run` sharing rows in this
    # work dir waits, then finds them submitted and reattaches.
    with sweep.jobs.submitting():
        data_root = datasets.prepare(profile, workdir, datasets.uses_test_split(runs))
        views = sweep.views(read_only=False)
        plan = decide(runs, {h: v.state for h, v in views.items()}, args.rerun_stale)
        console.print(f"[bold]{len(runs)}[/] runs for {', '.join(t.name for t in sweep.tables)} on profile "
                      f"[bold]{profile.name}[/]: {len(plan.finished)} finished, {len(plan.attached)} already "
                      f"submitted (reattaching), {len(plan.todo)} to submit to {cluster.name}"
                      + (f" ({len(plan.stale)} stale, retrained)" if plan.stale else ""))
        stale_left = sum(views[r.config_hash].state.stale for r in plan.finished)
        if stale_left:
            console.print(f"[yellow]{stale_left} finished run(s) were trained with older code or on other "
                          f"annotations{' or libraries' if args.stale_libraries else ''}[/]; "
                          "`reproduce run --rerun-stale` retrains them")
        # Compute nodes may have no internet: every weight file the runs to submit
        # name (``Run.weights``) is fetched here, now; the jobs read this cache and never download.
        prefetch(sorted({name for run in plan.todo for name in run.weights}), torch_home)
        submission = Submission(profile, cluster, workdir, uri, data_root, torch_home, args.parallel, tuple(gpu_ids),
                                {r.config_hash: views[r.config_hash].state.finished_id for r in plan.stale},
                                args.stale_libraries)
        submission.set_stale_aside(plan.stale)
        records = {h: v.job for h, v in views.items() if v.job is not None}
        for h, job in submission.submit(plan.todo, records).items():
            console.print(f"submitted {h} as {job.backend} job {job.job_id}")
    if args.no_wait:
        console.print("submitted; follow with `reproduce status`, or `reproduce run` again to wait")
        return 0
    return follow(sweep, args.poll, submission, cluster.max_requeues)


COLOURS = {State.FINISHED: "green", State.FAILED: "red", State.RUNNING: "cyan"}


def _rows_text(run: Run) -> str:
    return ", ".join(row_text(r) for r in run.rows[:3]) + (" ..." if len(run.rows) > 3 else "")


def progress_table(runs: list[Run], views: dict[str, RunView], elapsed: float) -> RichTable:
    """The live view of `run` on a terminal: one line a run, and the time left in all."""
    states = {h: v.state for h, v in views.items()}
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


def follow(sweep: Sweep, poll: float, submission: Submission | None = None, max_requeues: int = 0) -> int:
    """Wait for every run, showing progress; exit 1 if any failed.

    On a terminal the progress is a live table (rich) redrawn every poll;
    otherwise (a pipe, a log file, a CI job) a plain line per change of state.
    A run whose job the system killed is submitted again, resuming from its
    last checkpoint, as long as ``status.to_resubmit`` says so.
    """
    from rich.live import Live
    runs = sweep.runs
    last: dict[str, str] = {}
    start = time.time()
    live = Live(console=console, refresh_per_second=1, auto_refresh=False) if console.is_terminal else None
    if live is not None:
        live.start()
    try:
        while True:
            views = sweep.views(read_only=False)
            if live is not None:
                live.update(progress_table(runs, views, time.time() - start), refresh=True)
            else:
                for run in runs:
                    st = views[run.config_hash].state
                    line = f"{st.state}: {st.detail}" if st.detail else st.state
                    if last.get(run.config_hash) != line:
                        colour = COLOURS.get(st.state, "yellow")
                        console.print(f"[{colour}]{run.config_hash}[/] {escape(_rows_text(run))}: {escape(line)}")
                        last[run.config_hash] = line
            again = to_resubmit(views.values(), max_requeues)
            if again and submission is not None:
                records = {h: v.job for h, v in views.items() if v.job is not None}
                for h, job in submission.resubmit(again, records).items():
                    console.print(f"resubmitted {h} as {job.backend} job {job.job_id}: its job was killed by the "
                                  "system, it resumes from its last checkpoint")
                time.sleep(poll)
                continue
            if not any(v.state.state in ACTIVE for v in views.values()):
                break
            time.sleep(poll)
    finally:
        if live is not None:
            live.stop()
    failed = [h for h, v in views.items() if v.state.state != State.FINISHED]
    done = len(runs) - len(failed)
    console.print(f"[bold]{done}/{len(runs)} finished[/] in {time.time() - start:.0f} s"
                  + (f", {len(failed)} not finished: {', '.join(failed)}" if failed else ""))
    for h in failed:  # what the live view showed last, kept on screen
        if live is not None:
            console.print(f"[red]{h}[/] {views[h].state.state}: {escape(views[h].state.detail)}")
    return 1 if failed else 0
