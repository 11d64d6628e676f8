"""Where a job's time goes, read from the job logs of a test run (or any work dir).

Why: a test of the suite is mostly jobs, and a tiny job is mostly start-up;
this splits each single-attempt job that trained and evaluated into its
phases from the timestamps submitit and mmengine write (to the second), so
that a change to the start-up can be measured on the suite's own jobs.

    .venv/bin/python benchmarks/job_phases.py /tmp/pytest-of-$USER/pytest-N
"""
from __future__ import annotations

import argparse
import re
import statistics
from datetime import datetime
from pathlib import Path

SUBMITIT = r"submitit INFO \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+\) - "
MMENGINE = r"^(\d\d/\d\d \d\d:\d\d:\d\d) - mmengine - INFO - "
MARKS = {"start": SUBMITIT + "Starting with", "config": MMENGINE + "$", "iter": MMENGINE + r"Iter\(train\)",
         "evaluated": MMENGINE + "bbox_mAP_copypaste", "end": SUBMITIT + "Job completed"}
PHASES = [("imports and config", "start", "config"), ("model, data, first iterations", "config", "iter"),
          ("training (first to last logged iteration)", "iter", "last_iter"),
          ("evaluation", "last_iter", "evaluated"), ("after the evaluation, to exit", "evaluated", "end"),
          ("whole job", "start", "end")]


def _time(stamp: str, year: int) -> datetime:
    if "-" in stamp[:5]:
        return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
    return datetime.strptime(f"{year}/{stamp}", "%Y/%m/%d %H:%M:%S")


def phases(log: str) -> dict[str, float] | None:
    if log.count("Starting with") != 1:
        return None  # requeued or resubmitted: its phases overlap
    found = {k: list(re.finditer(p, log, re.M)) for k, p in MARKS.items()}
    if not all(found.values()):
        return None
    start = _time(found["start"][0].group(1), 0)
    t = {k: _time(v[0].group(1), start.year) for k, v in found.items()}
    t["last_iter"] = _time(found["iter"][-1].group(1), start.year)
    return {name: (t[b] - t[a]).total_seconds() for name, a, b in PHASES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="searched for submitit's *_log.out files")
    args = ap.parse_args()
    jobs = [p for p in (phases(f.read_text(errors="replace")) for f in args.folder.rglob("*_log.out")) if p]
    if not jobs:
        raise SystemExit(f"no single-attempt job that trained and evaluated under {args.folder}")
    print(f"{len(jobs)} jobs\n\n| phase | median | sum |\n|---|---|---|")
    for name, _, _ in PHASES:
        values = [j[name] for j in jobs]
        print(f"| {name} | {statistics.median(values):.0f} s | {sum(values):.0f} s |")


if __name__ == "__main__":
    main()
