"""``reproduce check``: the jobs' preflight, run before any GPU-hour is spent.

Locally (``--cluster local``) the checks run in this process on this
machine's device. On a SLURM cluster they run as one short job with one task
per GPU, as a real run would, so a CPU-only mmcv, an unreadable dataset or a
missing weight file on the compute nodes shows up in a minute instead of at
the first evaluation.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from reproduce.node import preflight



def _distinct(planner, runs, data_root: Path) -> dict[str, dict[str, Any]]:
    """One (config, options) per set of needs: 26 paper runs share a handful."""
    from musu.train import set_data_root
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        cfg = set_data_root(planner.resolve(run.config_name, run.options), data_root)
        entry = out.setdefault(json.dumps(preflight.needs(cfg)), dict(config=run.config_name, options=run.options,
                                                                      data_root=str(data_root), runs=[]))
        entry["runs"].append(run.config_hash)
    return out


def check_task(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Run in each task of the check job (and locally): every distinct config's checks on this task's device."""
    import os

    from musu.train import load_config
    if payload.get("torch_home"):
        os.environ["TORCH_HOME"] = payload["torch_home"]
    rows = []
    device = preflight.job_device()
    for entry in payload["configs"]:
        cfg = load_config(entry["config"], entry["options"], tuple(payload.get("config_dirs", ())),
                          data_root=entry["data_root"])
        for c in preflight.run_checks(cfg, device=device, gpus=payload["gpus"],
                                      tracking_uri=payload["tracking_uri"]):
            rows.append(dict(task=_task_id(), device=device, config=entry["config"], runs=len(entry["runs"]),
                             **c.to_json()))
    return rows


def _task_id() -> int:
    import os
    return int(os.environ.get("SLURM_PROCID", "0"))


def cmd_check(args) -> int:
    from reproduce.sweep import datasets
    from reproduce.backends.clusters import load_cluster
    from reproduce.sweep.sweep import Sweep

    sweep = Sweep.from_args(args)
    profile, tables, runs = sweep.profile, sweep.tables, sweep.runs
    cluster = load_cluster(args.cluster)
    backend = cluster.backend
    backend.admit(profile, checks_only=True)
    workdir = sweep.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    uri = sweep.uri(read_only=False)
    data_root = datasets.prepare(profile, workdir, datasets.uses_test_split(runs))
    configs = list(_distinct(sweep.planner, runs, data_root).values())
    payload = dict(configs=configs, gpus=profile.gpus, tracking_uri=uri, torch_home=str(cluster.torch_home(workdir)),
                   config_dirs=list(profile.config_dirs))
    console = Console(stderr=True, highlight=False)
    rows = backend.run_check(check_task, payload, workdir / ".reproduce" / "submitit" / "check", profile.gpus,
                             profile.processes, say=console.print)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
    else:
        out = RichTable(title=f"preflight: {', '.join(t.name for t in tables)} on profile {profile.name}, "
                              f"cluster {cluster.name}")
        for col in ("task", "device", "config (runs)", "check", "result", "detail"):
            out.add_column(col)
        for r in rows:
            out.add_row(str(r["task"]), r["device"], f"{r['config']} ({r['runs']})", r["name"],
                        "[green]ok[/]" if r["ok"] else "[red]FAILED[/]",
                        escape(r["detail"] + (f" -> {r['fix']}" if not r["ok"] and r["fix"] else "")))
        Console(highlight=False, width=200).print(out)
    failed = [r for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)}/{len(rows)} checks passed"
          + (f"; failed: {', '.join(sorted({r['name'] for r in failed}))}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0

