"""``reproduce cancel TABLE|all [--row NAME]``: stop the jobs of those rows.

A SLURM job is ``scancel``-ed; a local job's submitit controller gets the
SIGINT submitit itself uses to cancel (it stops the training process, then
itself). The record keeps ``cancelled``, so the row reads ``cancelled``, not
failed, and the next ``reproduce run`` submits it again (it resumes from its
last checkpoint).
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace

from rich.console import Console

from reproduce import backends
from reproduce.backends import JobRecord, Phase
from reproduce.errors import UserError
from reproduce.sweep.sweep import Sweep

console = Console(stderr=True, highlight=False, soft_wrap=True)


def cmd_cancel(args) -> int:
    sweep = Sweep.from_args(args)
    records = sweep.jobs.records(sweep.profile.name)
    chosen = sweep.select(args.row)  # every seed of the rows
    asked = {run.config_hash: records[run.config_hash] for _, _, run in chosen if run.config_hash in records}
    jobs = backends.poll(asked.values())  # one call per backend (one squeue and one sacct for SLURM)
    targets: dict[str, tuple[list[str], JobRecord]] = {}
    for table, row, run in chosen:
        record = asked.get(run.config_hash)
        if record is None:
            continue
        job = jobs[record]
        if job.elsewhere:
            raise UserError(f"{table}/{row}: its {job.where} runs on {job.elsewhere}, not here",
                            hint="run `reproduce cancel` on that machine")
        if job.phase is not Phase.ENDED:
            targets.setdefault(run.config_hash, ([], record))[0].append(f"{table}/{row}")
    if not targets:
        console.print("nothing to cancel: no job of these rows is queued or running")
        return 0
    for h, (rows, record) in targets.items():
        console.print(f"{h} {record.backend} job {record.job_id}: {', '.join(rows)}")
    if not args.yes:
        if not sys.stdin.isatty():
            raise UserError(f"cancelling {len(targets)} job(s) needs a confirmation", hint="add --yes")
        if input(f"cancel these {len(targets)} job(s)? [y/N] ").strip().lower() not in ("y", "yes"):
            console.print("nothing cancelled")
            return 1
    for h, (rows, record) in targets.items():
        backends.of(record).cancel(record)
        sweep.jobs.save(sweep.profile.name, {h: replace(record, cancelled=time.time())})
        console.print(f"cancelled {h} ({', '.join(rows)}); `reproduce run` submits it again")
    return 0

