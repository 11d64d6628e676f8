"""The paper's tables as the tracking store has them: per row, the paper's
numbers beside the mean over its finished seeds, where its unfinished seeds
stand (``status.row_state``), and which cell is best. Every number shown as
reproduced comes from a finished MLflow run; a row without one says why.
Gathered once (pandas), rendered by ``report.render``."""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reproduce import tracking
from reproduce.metrics import metrics
from reproduce.sweep.spec import SWEEPS_DIR, Table
from reproduce.sweep.status import row_state
from reproduce.sweep.sweep import Sweep


@dataclass
class Cell:
    metric: str
    paper: float | None
    value: float | None = None
    std: float | None = None
    best: bool = False
    seeds: tuple[int, int] | None = None  # (finished, planned) while some seeds of the row are not finished
    values: list[float] = field(default_factory=list)  # one per finished seed (``orderings`` judges them)
    compared: bool = True  # False: the profile's data is not the paper's (``Profile.unlike_paper``), no difference

    @property
    def partial(self) -> str:
        """'2/3' when the value is the mean of only some of the row's seeds, else ''."""
        return f"{self.seeds[0]}/{self.seeds[1]}" if self.seeds else ""

    @property
    def diff(self) -> float | None:
        if self.value is None or self.paper is None or not self.compared:
            return None
        return self.value - self.paper

    def as_json(self) -> dict[str, Any]:
        return dict(reproduced=self.value, std=self.std, per_seed=self.values, paper=self.paper,
                    difference=self.diff, best=self.best,
                    seeds_finished=self.seeds[0] if self.seeds else None,
                    seeds_planned=self.seeds[1] if self.seeds else None)


@dataclass
class ReportRow:
    name: str
    label: str
    section: str | None
    status: str  # finished | pending | queued | running | failed | interrupted | reference
    detail: str
    runs: int
    cells: list[Cell] = field(default_factory=list)
    switches: dict[str, Any] = field(default_factory=dict)
    stale: bool = False  # a number from code other than today's (reproduce.node.fingerprint)
    submit: list[str] = field(default_factory=list)  # its runs' detections on an unlabeled test split (COCO's server)
    finished_ids: list[str] = field(default_factory=list)  # the MLflow runs of its finished seeds
    maps_b64: str | None = None  # Figure 1 of its first finished seed (HTML only: ``attach_maps``)
    runs_planned: int = 0  # its seeds


@dataclass
class ReportTable:
    table: Table
    profile: str
    rows: list[ReportRow]
    paper_only: bool
    unlike_paper: str = ""  # why no difference to the paper is printed ('' when one is: ``Profile.unlike_paper``)

    @property
    def spec(self) -> str:
        """The spec's path as a reader finds it: under sweeps/ for the suite's, else as given."""
        path = Path(self.table.file)
        suite = SWEEPS_DIR.resolve()
        return f"sweeps/{path.name}" if path.resolve().parent == suite else str(path)

    @property
    def submissions(self) -> list[tuple[str, str]]:
        """(row label, detections file) of every finished run with test-split detections."""
        return [(row.label, path) for row in self.rows for path in row.submit]

    @property
    def sections(self) -> list[tuple[str | None, list[ReportRow]]]:
        out: list[tuple[str | None, list[ReportRow]]] = []
        for row in self.rows:
            if not out or out[-1][0] != row.section:
                out.append((row.section, []))
            out[-1][1].append(row)
        return out


def gather(sweep: Sweep, paper_only: bool = False) -> list[ReportTable]:
    """Each table's rows: the paper's numbers and, unless ``paper_only``, the finished runs'
    (the mean over a row's seeds) and where the unfinished ones stand (``sweep.views``)."""
    views = {} if paper_only else sweep.views(read_only=True)
    settled = {h: v.tracked for h, v in views.items()}
    finished = finished_metrics(settled)
    out, rows_of = [], sweep.rows()
    unlike = "" if paper_only else sweep.profile.unlike_paper
    for table in sweep.tables:
        rows = []
        for rv in (r for r in rows_of if r.table is table):
            row = rv.row
            cells = [Cell(m, row.paper.get(m), compared=not unlike) for m in table.columns]
            if paper_only:
                rows.append(ReportRow(row.name, row.label, row.section, "paper", "", 0, cells, row.switches))
                continue
            if not rv.seeds:
                rows.append(ReportRow(row.name, row.label, row.section, "reference", "paper row, not trained", 0,
                                      cells, row.switches))
                continue
            # Seeds of a row are separate runs (their hashes differ by seed).
            seeds = [r.config_hash for r in rv.seeds]
            agg = finished.loc[finished.index.isin(seeds)]
            for cell in cells:
                if cell.metric not in agg:
                    continue
                values = agg[cell.metric].dropna()
                if len(values):
                    cell.values = [float(v) for v in values]
                    cell.value = float(values.mean())
                    cell.std = float(values.std()) if len(values) > 1 else None
                    if len(values) < len(seeds):  # a mean of some seeds says so; it is never "best"
                        cell.seeds = (len(values), len(seeds))
            status, detail = row_state([views[h].state for h in seeds if h not in agg.index], len(seeds),
                                       views[seeds[0]].state)
            rows.append(ReportRow(row.name, row.label, row.section, status, detail, len(agg), cells,
                                  row.switches, stale=any(views[h].state.stale for h in seeds),
                                  submit=[settled[h].testdev for h in seeds if settled[h].testdev],
                                  finished_ids=[settled[h].finished_id for h in seeds if settled[h].finished_id],
                                  runs_planned=len(seeds)))
        _mark_best(rows, paper_only, table)
        out.append(ReportTable(table, sweep.profile.name, rows, paper_only, unlike))
    return out


MAPS = "consistency_maps.png"  # the artifact each job draws (musu.models.consistency_hook)


def attach_maps(tables: list[ReportTable], tracker: tracking.Tracker, folder: Path) -> None:
    """Each row's Figure 1 (its first finished seed's maps), for the HTML page, beside its numbers."""
    done: dict[str, str | None] = {}
    for t in tables:
        for row in t.rows:
            if not row.finished_ids:
                continue
            run_id = row.finished_ids[0]
            if run_id not in done:
                path = tracker.artifact(run_id, MAPS, Path(folder) / run_id)
                done[run_id] = base64.b64encode(path.read_bytes()).decode() if path is not None else None
            row.maps_b64 = done[run_id]


def finished_metrics(settled: dict[str, tracking.Tracked]) -> "pandas.DataFrame":
    """One row per config hash with the metrics of its finished MLflow run."""
    import pandas as pd
    records = [{"config_hash": h, **tr.finished} for h, tr in settled.items() if tr.finished is not None]
    return pd.DataFrame.from_records(records, index="config_hash") if records else \
        pd.DataFrame(index=pd.Index([], name="config_hash"))


def _mark_best(rows: list[ReportRow], paper_only: bool, table: Table) -> None:
    """Bold the best value of each column, as the paper does: not in a table whose spec says
    ``mark_best: false`` (Table 7), not in a column whose metric has no better side."""
    if not rows or not table.mark_best:
        return
    for i, cell0 in enumerate(rows[0].cells):
        if metrics()[cell0.metric].best == "none":
            continue
        # compared as printed: values that print alike are tied, and both are marked
        digits = metrics()[cell0.metric].decimals
        raw = (lambda c: c.paper) if paper_only else (lambda c: c.value)

        def key(c):
            return None if raw(c) is None else round(raw(c), digits)
        vals = [key(r.cells[i]) for r in rows if key(r.cells[i]) is not None and not r.cells[i].partial]
        if not vals:
            continue
        best = max(vals)
        for r in rows:
            if key(r.cells[i]) is not None and not r.cells[i].partial and key(r.cells[i]) == best:
                r.cells[i].best = True


# ---- rendering --------------------------------------------------------------------------------------------
