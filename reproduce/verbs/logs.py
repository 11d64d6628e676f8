"""``reproduce logs TABLE ROW``: a row's job log and its MLflow run, without
digging through ``.reproduce/submitit/``."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from reproduce import backends, tracking
from reproduce.backends import JobRecord, Phase
from reproduce.errors import UserError
from reproduce.sweep.sweep import Sweep
from reproduce.tracking import credentials


def cmd_logs(args) -> int:
    sweep = Sweep.from_args(args, args.table)
    profile = sweep.profile
    if len(sweep.tables) != 1:
        raise UserError("logs takes one table", hint="e.g. reproduce logs table1 alpha-1/3")
    table, row, run = sweep.select(args.row)[-1]  # a row of several seeds: its last seed's run
    record = sweep.jobs.records(profile.name).get(run.config_hash)
    if record is None:
        raise UserError(f"{table}/{row} ({run.config_hash}) has no job yet on profile {profile.name}",
                        hint=f"reproduce run {table} --profile {profile.name}")
    tries = record.attempts
    if not -len(tries) <= args.attempt < len(tries):
        raise UserError(f"{table}/{row} has {len(tries)} attempt(s); --attempt {args.attempt} is none of them",
                        hint=f"use 0..{len(tries) - 1}, or -1 for the latest")
    chosen = tries[args.attempt]
    uri = sweep.uri(read_only=True)
    latest = tracking.tracked(sweep.tracker(read_only=True).runs_of(profile.name, run.config_hash)).latest
    print(f"# {table}/{row}: run {run.config_hash}, {chosen.backend} job {chosen.job_id} "
          f"(attempt {tries.index(chosen) + 1} of {len(tries)})")
    print(f"# MLflow: {latest.run_id if latest else 'no run yet'} in {credentials.redact(uri)}")
    paths = backends.of(chosen).log_paths(chosen)
    offsets = {}
    for path in paths:
        print(f"# {path}")
        text = path.read_text(errors="replace") if path.exists() else "(no such file yet)\n"
        lines = text.splitlines()
        sys.stdout.write("\n".join(lines[-args.lines:]) + "\n" if args.lines else text)
        offsets[path] = path.stat().st_size if path.exists() else 0
    if args.follow:
        _follow(chosen, paths, offsets)
    return 0


def _follow(record: JobRecord, paths: list[Path], offsets: dict[Path, int]) -> None:
    """Print what the logs gain until the job ends (Ctrl-C stops following, not the job)."""
    backend = backends.of(record)
    while True:
        ended = backend.poll([record])[record].phase is Phase.ENDED
        for path in paths:
            if path.exists() and path.stat().st_size > offsets[path]:
                with open(path, errors="replace") as fh:
                    fh.seek(offsets[path])
                    sys.stdout.write(fh.read())
                    offsets[path] = fh.tell()
        sys.stdout.flush()
        if ended:
            return
        time.sleep(1.0)
