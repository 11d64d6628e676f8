"""`reproduce status` and `reproduce report` over a sweep of 10,000 runs.

    .venv/bin/python benchmarks/status_at_scale.py [--runs 10000]

A spec of a grid of b values, 100 seeds each, plans N runs. The MLflow SQLite store
gets N runs as jobs leave them: half FINISHED with their metrics, half
RUNNING with their progress; each run has ``--params`` params (300: a real
run logs its flattened config). The running half has SLURM job records (job
ids no scheduler holds, so SLURM's answer for them is "ended long ago").
squeue and sacct are wrapped to count calls: one poll must make one of each
whatever N (issue 11, item 14). Needs the local SLURM cluster for real
squeue/sacct (cluster/local-slurm.sh start); the figures go in
docs/benchmarks.md. The numbers in the store are load, not results.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "reproduce.cli"]


def shimmed_env(tmp: Path) -> tuple[dict, Path]:
    """PATH with squeue/sacct wrappers that log each call, then run the real command."""
    shim, log = tmp / "shim", tmp / "calls.log"
    shim.mkdir()
    for name in ("squeue", "sacct"):
        real = shutil.which(name)
        if real is None:
            raise SystemExit(f"{name} not found: start the local SLURM cluster (cluster/local-slurm.sh start)")
        (shim / name).write_text(f'#!/bin/sh\necho "{name}" >> {log}\nexec {real} "$@"\n')
        (shim / name).chmod(0o755)
    return {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}, log


def fill(uri: str, profile: str, runs: list[dict], work: Path, params: int) -> None:
    from mlflow.entities import Metric, Param, RunTag

    from reproduce import tracking
    from reproduce.backends.records import JobRecord, JobStore
    cl = tracking.client(uri)
    exp = tracking.Tracker(uri).experiment(profile)
    records = {}
    for i, run in enumerate(runs):
        h = run["config_hash"]
        table, row = run["rows"][0]
        r = cl.create_run(exp, tags={tracking.TAG_HASH: h, tracking.TAG_PROFILE: profile, tracking.TAG_TABLE: table,
                                     tracking.TAG_ROW: row})
        for first in range(0, params, 100):  # a real run logs its flattened config: about 300 params
            cl.log_batch(r.info.run_id, params=[Param(f"cfg.key{k}", f"value {k}")
                                                for k in range(first, min(params, first + 100))])
        if i % 2 == 0:
            cl.log_batch(r.info.run_id, metrics=[Metric(k, 30.0 + (i % 10), 0, 0) for k in ("AP", "AP50", "AP75")])
            cl.set_terminated(r.info.run_id, "FINISHED")
        else:
            cl.log_batch(r.info.run_id, tags=[RunTag(tracking.TAG_PROGRESS, "100/200"),
                                              RunTag(tracking.TAG_STATE, "running")])
            records[h] = JobRecord("slurm", f"{9000000 + i}_0", str(work / "none"), time.time() - 3600)
    JobStore.at(work).save(profile, records)


def timed(cmd, env, log: Path, repeats: int = 3) -> tuple[float, float, int]:
    """Best and median wall time, and scheduler calls per invocation."""
    times, calls = [], []
    for _ in range(repeats):
        log.write_text("")
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
        if out.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")
        calls.append(len(log.read_text().splitlines()))
    return min(times), sorted(times)[len(times) // 2], max(calls)


def read_both_ways(uri: str, profile: str, repeats: int = 3) -> list[tuple[str, float, int]]:
    """In one process: ``Tracker.runs_by_hash`` over every run, by the direct SQL read
    (``reproduce.tracking.sql``) and through MLflow's ``search_runs``; best of ``repeats``."""
    from reproduce import tracking
    out = []
    for name, direct in (("direct SQL read (tracking.sql)", True), ("MLflow search_runs", False)):
        best, n = float("inf"), 0
        for _ in range(repeats):
            tracker = tracking.Tracker(uri)
            if not direct:
                tracker._sql = None
            t = time.perf_counter()
            n = sum(len(v) for v in tracker.runs_by_hash(profile).values())
            best = min(best, time.perf_counter() - t)
        out.append((name, best, n))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--params", type=int, default=300, help="params per run (a real run logs about 300)")
    args = ap.parse_args()
    print(f"machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cores), "
          f"python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sweeps = tmp / "sweeps"
        shutil.copytree(ROOT / "sweeps", sweeps)
        # N runs: a grid of b values (Eq. 2's threshold), each with up to 100 seeds (the spec's limit)
        seeds = min(100, args.runs)
        bs = ", ".join(f"{0.001 * (i + 1):.3f}" for i in range(max(1, args.runs // seeds)))
        (sweeps / "scale.yaml").write_text(f"table: scale\ncolumns: [AP, AP50, AP75]\nrows:\n"
                                           f"  - {{name: \"b{{b}}\", grid: {{b: [{bs}]}}, seeds: {seeds}}}\n")
        common = ["--profile", "smoke", "--sweeps", str(sweeps), "--workdir", str(tmp)]
        t = time.perf_counter()
        plan = json.loads(subprocess.run([*CLI, "plan", "scale", *common[:4], "--json"], capture_output=True, text=True,
                                         check=True).stdout)
        print(f"plan of {len(plan['runs'])} runs (cold): {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        fill(f"sqlite:///{tmp / 'mlruns.db'}", "smoke", plan["runs"], tmp, args.params)
        print(f"(filling the store with {len(plan['runs'])} runs of {args.params} params took {time.perf_counter() - t:.0f} s)")
        env, log = shimmed_env(tmp)
        for name, cmd in (("status", [*CLI, "status", "scale", *common, "--json"]),
                          ("report", [*CLI, "report", "scale", *common, "--format", "md"])):
            best, med, calls = timed(cmd, env, log)
            print(f"| reproduce {name} over {len(plan['runs'])} runs ({len(plan['runs']) // 2} with SLURM jobs) | "
                  f"{best:.2f} s (median {med:.2f} s) | {calls} scheduler calls |")
        for name, best, n in read_both_ways(f"sqlite:///{tmp / 'mlruns.db'}", "smoke"):
            print(f"| reading the {n} runs, {name}, in process | {best:.2f} s |")


if __name__ == "__main__":
    main()
