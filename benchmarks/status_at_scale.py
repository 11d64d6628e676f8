"""`reproduce status` and `reproduce report` over a sweep of 10,000 runs.

    .venv/bin/python benchmarks/status_at_scale.py [--runs 10000] [--server mlflow|musu] [--moving 0.5]

``--server``: the same store served on 127.0.0.1 and read over HTTP, each command
timed cold (no runs kept under the work dir) and warm (the settled runs kept from
the previous read: ``reproduce/tracking/settled.py``); ``mlflow`` is a plain
``mlflow server`` (read with ``search_runs``), ``musu`` the app ``reproduce server``
runs (``mlflow server --app-name musu``: its lean route, ``tracking/server_app.py``).
``--moving``: the share of runs not settled (RUNNING), 0.5 as before.

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


def fill_fast(db: Path, profile: str, runs: list[dict], work: Path, params: int, moving: float,
              ended_just_now: bool = False) -> None:
    """What ``fill`` writes, inserted into the store's tables in bulk (seconds, where MLflow's
    client takes about 15 minutes at 10,000 runs of 300 params): one run made by MLflow gives
    the experiment and the row every other run copies, so the columns are this MLflow's."""
    import sqlite3
    import uuid

    from reproduce import tracking
    from reproduce.backends.records import JobRecord, JobStore
    uri = f"sqlite:///{db}"
    tracker = tracking.Tracker(uri)
    template = tracker.client.create_run(tracker.experiment(profile)).info.run_id
    con = sqlite3.connect(db)
    cols = [c[1] for c in con.execute("PRAGMA table_info(runs)")]
    now = int(time.time() * 1000)
    records = {}
    every = max(1, round(1 / moving)) if moving > 0 else 0
    run_rows, tag_rows, param_rows, metric_rows = [], [], [], []
    for i, run in enumerate(runs):
        h, (table, row) = run["config_hash"], run["rows"][0]
        rid = uuid.uuid4().hex
        running = every and i % every == every - 1
        # a sweep's finished runs ended over the days before (``--ended-just-now``: all a second ago,
        # the worst case for the kept runs, whose reads ask again about runs ended in the last SKEW_S)
        start = now - 3_600_000 + i if running or ended_just_now else now - 2 * 86_400_000 + i * 8_000
        status, end = ("RUNNING", None) if running else ("FINISHED", now - 1000 if ended_just_now else start + 3_600_000)
        run_rows.append((rid, status, start, end))
        tags = {tracking.TAG_HASH: h, tracking.TAG_PROFILE: profile, tracking.TAG_TABLE: table,
                tracking.TAG_ROW: row, tracking.TAG_STATE: "running" if running else "finished"}
        if running:
            tags[tracking.TAG_PROGRESS] = "100/200"
            records[h] = JobRecord("slurm", f"{9000000 + i}_0", str(work / "none"), time.time() - 3600)
        else:
            metric_rows += [(k, 30.0 + (i % 10), now, rid, 0, 0) for k in ("AP", "AP50", "AP75")]
        tag_rows += [(k, v, rid) for k, v in tags.items()]
        param_rows += [(f"cfg.key{k}", f"value {k}", rid) for k in range(params)]
    pick = ", ".join({"run_uuid": "?", "status": "?", "start_time": "?", "end_time": "?"}.get(c, c) for c in cols)
    with con:
        for rid, status, start, end in run_rows:
            con.execute(f"INSERT INTO runs ({', '.join(cols)}) SELECT {pick} FROM runs WHERE run_uuid = ?",
                        (rid, status, start, end, template))
        con.execute("DELETE FROM runs WHERE run_uuid = ?", (template,))
        con.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tag_rows)
        con.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", param_rows)
        con.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                        "VALUES (?, ?, ?, ?, ?, ?)", metric_rows)
        con.executemany("INSERT INTO latest_metrics (key, value, timestamp, run_uuid, step, is_nan) "
                        "VALUES (?, ?, ?, ?, ?, ?)", metric_rows)
    con.close()
    JobStore.at(work).save(profile, records)


def served(db: Path, tmp: Path, app: str):
    """``mlflow server`` over the store on a free port of 127.0.0.1, in a process group of its own."""
    import signal
    import socket
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
                             f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             *(["--app-name", app] if app == "musu" else [])],
                            stdout=open(tmp / "server.log", "ab"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc, f"http://127.0.0.1:{port}", lambda: os.killpg(proc.pid, signal.SIGTERM)
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit(f"mlflow server did not come up: {(tmp / 'server.log').read_text()[-2000:]}")


def timed(cmd, env, log: Path, repeats: int = 3, before=None) -> tuple[float, float, int]:
    """Best and median wall time, and scheduler calls per invocation (``before``: run ahead of each)."""
    times, calls = [], []
    for _ in range(repeats):
        if before is not None:
            before()
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
    ap.add_argument("--server", choices=("mlflow", "musu"), help="read through a server, cold and warm: a plain "
                    "mlflow server, or the app reproduce server runs")
    ap.add_argument("--moving", type=float, default=0.5, help="share of the runs still RUNNING (0 to 1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ended-just-now", action="store_true", help="every finished run ended a second before the "
                    "reads (the worst case for the kept runs); otherwise over the two days before")
    args = ap.parse_args()
    if not 0 <= args.moving <= 1:
        raise SystemExit(f"--moving {args.moving}: give a share between 0 and 1")
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
        n = len(plan["runs"])
        print(f"plan of {n} runs (cold): {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        db = tmp / "mlruns.db"
        fill_fast(db, "smoke", plan["runs"], tmp, args.params, args.moving, args.ended_just_now)
        moving = sum(1 for r in tracking_rows(db) if r == "RUNNING")
        print(f"(filling the store with {n} runs of {args.params} params, {moving} RUNNING, took "
              f"{time.perf_counter() - t:.0f} s)")
        env, log = shimmed_env(tmp)
        stop = None
        if args.server:
            _, uri, stop = served(db, tmp, args.server)
            common += ["--tracking-uri", uri]
        kept = tmp / ".reproduce" / "settled-runs"
        try:
            for name, cmd in (("status", [*CLI, "status", "scale", *common, "--json"]),
                              ("report", [*CLI, "report", "scale", *common, "--format", "md"])):
                where = {"mlflow": "through mlflow server", "musu": "through reproduce server's app",
                         None: "SQLite read directly"}[args.server]
                if args.server:
                    best, med, calls = timed(cmd, env, log, args.repeats, before=lambda: shutil.rmtree(kept, True))
                    print(f"| reproduce {name}, {n} runs ({moving} RUNNING), {where}, cold | {best:.2f} s "
                          f"(median {med:.2f} s) | {calls} scheduler calls |")
                best, med, calls = timed(cmd, env, log, args.repeats)
                print(f"| reproduce {name}, {n} runs ({moving} RUNNING), {where}{', warm' if args.server else ''} | "
                      f"{best:.2f} s (median {med:.2f} s) | {calls} scheduler calls |")
        finally:
            if stop is not None:
                stop()
        if not args.server:
            for name, best, k in read_both_ways(f"sqlite:///{db}", "smoke"):
                print(f"| reading the {k} runs, {name}, in process | {best:.2f} s |")


def tracking_rows(db: Path) -> list[str]:
    import sqlite3
    con = sqlite3.connect(db)
    try:
        return [r[0] for r in con.execute("SELECT status FROM runs")]
    finally:
        con.close()


if __name__ == "__main__":
    main()
