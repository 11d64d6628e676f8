"""``reproduce plan TABLE``: the runs a table needs, their config hashes and GPU-hours."""
from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from reproduce.node.payload import row_text
from reproduce.sweep.sweep import Sweep


def cmd_plan(args) -> int:
    from musu.core.switches import Switches
    sweep = Sweep.from_args(args)
    runs = sweep.runs
    total = sum(r.gpu_hours for r in runs)
    shared = [r for r in runs if len(r.rows) > 1]
    if args.json:
        json.dump(dict(profile=sweep.profile.name, tables=[t.name for t in sweep.tables],
                       runs=[r.to_json() for r in runs], total_runs=len(runs), total_gpu_hours=round(total, 2),
                       rows=sum(len(r.rows) for r in runs), shared_runs=len(shared)), sys.stdout, indent=1)
        print()
        return 0
    out = RichTable(title=f"{', '.join(t.name for t in sweep.tables)} on profile {sweep.profile.name}")
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
