"""``reproduce status [TABLE]``: per row, where its runs stand."""
from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from reproduce.sweep.status import duration
from reproduce.sweep.sweep import Sweep


def cmd_status(args) -> int:
    sweep = Sweep.from_args(args)
    views = sweep.views(read_only=True)
    rows = sweep.rows()
    if args.json:
        json.dump([dict(table=r.table.name, row=r.row.name, seed=run.seed, config_hash=run.config_hash,
                        state=views[run.config_hash].state.state, detail=views[run.config_hash].state.detail,
                        seconds_left=views[run.config_hash].state.seconds_left,
                        stale=views[run.config_hash].state.stale)
                   for r in rows for run in r.seeds], sys.stdout, indent=1)
        print()
        return 0
    for table in sweep.tables:
        out = RichTable(title=f"{table.name} ({sweep.profile.name})")
        for col in ("row", "hash", "state", "detail"):
            out.add_column(col)
        for r in (r for r in rows if r.table is table):
            if not r.seeds:
                out.add_row(r.row.name, "-", "reference", "paper row, not trained")
                continue
            for run in r.seeds:
                st = views[run.config_hash].state
                name = r.row.name if len(r.seeds) == 1 else f"{r.row.name} (seed {run.seed})"
                out.add_row(escape(name), run.config_hash, st.state, escape(st.detail))
        Console(highlight=False, width=160).print(out)
    counts: dict[str, int] = {}
    for v in views.values():
        counts[v.state.state] = counts.get(v.state.state, 0) + 1
    left = [v.state.seconds_left for v in views.values() if v.state.seconds_left is not None]
    print(", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
          + (f"; about {duration(max(left))} until the running rows finish" if left else ""))
    return 0
