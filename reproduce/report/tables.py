"""``reproduce report``: the paper's tables rebuilt from MLflow, beside the paper.

Cells are gathered once (pandas) and rendered through jinja2 templates in
``reports/templates``: Markdown, LaTeX (booktabs, a standalone document), a
self-contained HTML page with plots, or JSON for scripts. Every number shown
as reproduced comes from a finished MLflow run; a row without one says why.
"""
from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from reproduce import tracking
from reproduce.metrics import metrics
from reproduce.cli import plan_args
from reproduce.errors import UserError
from reproduce.sweep.plan import Run
from reproduce.sweep.profiles import Profile
from reproduce.sweep.spec import SWEEPS_DIR, Table
from reproduce.backends.records import JobRecord, JobStore
from reproduce.sweep.status import RunState, State, states_of
from reproduce.paths import REPO

TEMPLATES = REPO / "reports" / "templates"


def fmt(metric: str, value: float | None) -> str:
    """Numbers as the paper prints them (``metrics.yaml``: AP 40.6, params 32.07M, FLOPs 205.3G)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return metrics()[metric].format(value)


def fmt_spread(metric: str, std: float | None) -> str:
    """A seed spread in the metric's own decimals (``1.7`` beside AP 40.6); '' without one."""
    return "" if std is None else f"{std:.{metrics()[metric].decimals}f}"


@dataclass
class Cell:
    metric: str
    paper: float | None
    value: float | None = None
    std: float | None = None
    best: bool = False
    seeds: tuple[int, int] | None = None  # (finished, planned) while some seeds of the row are not finished
    values: list[float] = field(default_factory=list)  # one per finished seed (``orderings`` judges them)

    @property
    def partial(self) -> str:
        """'2/3' when the value is the mean of only some of the row's seeds, else ''."""
        return f"{self.seeds[0]}/{self.seeds[1]}" if self.seeds else ""

    @property
    def diff(self) -> float | None:
        if self.value is None or self.paper is None:
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


def gather(profile: Profile, tables: list[Table], runs: list[Run], tracker: tracking.Tracker | None,
           records: dict[str, JobRecord], data: str | None = None, stale_libraries: bool = False
           ) -> list[ReportTable]:
    """Each table's rows: the paper's numbers and, with a ``tracker``, the finished runs'
    (the mean over a row's seeds) and where the unfinished ones stand. No tracker: the paper alone."""
    paper_only = tracker is None
    by_row = {(t, r): run for run in runs for t, r in run.rows}
    mlruns = tracker.runs_by_hash(profile.name, {r.config_hash for r in runs}) if tracker is not None else {}
    settled = {h: tracking.tracked(rs) for h, rs in mlruns.items()}
    finished = finished_metrics(settled)
    states = states_of(mlruns, records, {r.config_hash for r in runs}, data, stale_libraries) if not paper_only else {}
    out = []
    for table in tables:
        rows = []
        for row in table.rows:
            run = by_row.get((table.name, row.name))
            cells = [Cell(m, row.paper.get(m)) for m in table.columns]
            if paper_only:
                rows.append(ReportRow(row.name, row.label, row.section, "paper", "", 0, cells, row.switches))
                continue
            if run is None:
                rows.append(ReportRow(row.name, row.label, row.section, "reference", "paper row, not trained", 0,
                                      cells, row.switches))
                continue
            # Seeds of a row are separate runs (their hashes differ by seed).
            seeds = [r.config_hash for r in runs if (table.name, row.name) in r.rows]
            agg = finished.loc[finished.index.isin(seeds)]
            st = states[seeds[0]]
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
            status, detail = row_state([states[h] for h in seeds if h not in agg.index], len(seeds), st)
            rows.append(ReportRow(row.name, row.label, row.section, status, detail, len(agg), cells,
                                  row.switches, stale=any(states[h].stale for h in seeds if h in states),
                                  submit=[settled[h].testdev for h in seeds if h in settled and settled[h].testdev],
                                  finished_ids=[settled[h].finished_id for h in seeds
                                                if h in settled and settled[h].finished_id],
                                  runs_planned=len(seeds)))
        _mark_best(rows, paper_only, table)
        out.append(ReportTable(table, profile.name, rows, paper_only))
    return out


MAPS = "consistency_maps.png"  # the artifact each job draws (musu.models.consistency_hook)


# Which unsettled seed speaks for a row: the one a user must act on first.
URGENCY = (State.FAILED, State.KILLED, State.INTERRUPTED, State.CANCELLED, State.UNKNOWN, State.RUNNING,
           State.QUEUED, State.PENDING)


def row_state(unsettled: list[RunState], planned: int, first: RunState) -> tuple[State, str]:
    """A row of several seeds is finished once all are; until then it stands where its most
    urgent unsettled seed stands, and says how many seeds are done."""
    if not unsettled:
        return State.FINISHED, first.detail if planned == 1 else f"{planned}/{planned} seeds finished"
    lead = min(unsettled, key=lambda s: URGENCY.index(s.state) if s.state in URGENCY else len(URGENCY))
    if planned == 1:
        return lead.state, lead.detail
    done = planned - len(unsettled)
    return lead.state, f"{done}/{planned} seeds finished; {lead.state}" + (f": {lead.detail}" if lead.detail else "")


def attach_maps(tables: list[ReportTable], tracker: tracking.Tracker, folder: Path) -> None:
    """Each row's Figure 1 (its first finished seed's maps), for the HTML page, beside its numbers."""
    import base64
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
def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=autoescape,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = lambda cell: fmt(cell.metric, cell.value)
    env.filters["fmt_paper"] = lambda cell: fmt(cell.metric, cell.paper)
    # a spread in the metric's own digits (rho's 0.004, not 0.0), without its unit
    env.filters["fmt_std"] = lambda cell: fmt_spread(cell.metric, cell.std)
    env.filters["fmt_diff"] = lambda cell: "" if cell.diff is None else metrics()[cell.metric].format(cell.diff, True)
    # A finished run can lack a metric (COCO gives none for an area range
    # without objects): "n/a" then, the run's state otherwise.
    env.filters["absent"] = lambda row: "n/a" if row.status == "finished" else row.status
    env.filters["tex"] = tex_escape
    env.filters["md_label"] = md_label
    env.filters["html_label"] = tex_to_html
    env.globals.update(HEADERS={k: m.tex for k, m in metrics().items()}, MD_HEADERS={k: m.md for k, m in metrics().items()})
    return env


def tex_escape(text: str) -> str:
    """Escape LaTeX specials outside $...$ math; labels from the specs keep their math."""
    out, math_mode = [], False
    for ch in str(text):
        if ch == "$":
            math_mode = not math_mode
            out.append(ch)
        elif not math_mode and ch in "&%#_{}":
            out.append("\\" + ch)
        elif not math_mode and ch == "~":
            out.append("\\textasciitilde{}")
        else:
            out.append(ch)
    return "".join(out)


GREEK = {"alpha": "α", "beta": "β", "tau": "τ", "theta": "θ", "cdot": "·", "mathbb{I}": "𝕀", "le": "≤",
         "ge": "≥", "times": "×"}


def tex_to_html(text: str) -> "jinja2.utils.Markup":
    """The specs' LaTeX labels as plain HTML (the page works offline, without MathJax):
    ``$\\alpha = 1/3$`` -> ``α = 1/3``, ``v_i^{cls}`` -> v<sub>i</sub><sup>cls</sup>."""
    from markupsafe import Markup, escape

    def convert(math: str) -> str:
        for name, char in GREEK.items():
            math = math.replace("\\" + name, char)
        math = re.sub(r"\\mathcal\{(\w)\}", r"\1", math)
        math = re.sub(r"\\sqrt\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}", r"√(\1)", math)
        math = math.replace("\\", "")
        out = str(escape(math))
        out = re.sub(r"_\{([^{}]*)\}", r"<sub>\1</sub>", out)
        out = re.sub(r"\^\{([^{}]*)\}", r"<sup>\1</sup>", out)
        out = re.sub(r"_(\w)", r"<sub>\1</sub>", out)
        out = re.sub(r"\^(\w)", r"<sup>\1</sup>", out)
        return out.replace("{", "").replace("}", "")

    parts = str(text).split("$")
    html = "".join(str(escape(p)) if i % 2 == 0 else convert(p) for i, p in enumerate(parts))
    return Markup(html)


def md_label(text: str) -> str:
    return str(text).replace("|", "\\|")


def render(tables: list[ReportTable], fmt_name: str, plots: dict[str, dict[str, str]] | None = None) -> str:
    if fmt_name == "json":
        return json.dumps([dict(table=t.table.name, profile=t.profile, paper_only=t.paper_only,
                                columns=t.table.columns,
                                rows=[dict(name=r.name, label=r.label, section=r.section, status=r.status,
                                           detail=r.detail, runs=r.runs, stale=r.stale, submit=r.submit,
                                           cells={c.metric: c.as_json() for c in r.cells}) for r in t.rows])
                           for t in tables], indent=1)
    template = {"md": "table.md.j2", "tex": "document.tex.j2", "html": "page.html.j2"}[fmt_name]
    env = _env(autoescape=fmt_name == "html")
    text = env.get_template(template).render(tables=tables, plots=plots or {})
    return re.sub(r"\n{3,}", "\n\n", text) if fmt_name == "md" else text


def render_orderings(tables: list[ReportTable], profile: Profile) -> str:
    """The orderings document (``reproduce.report.orderings``) for the rows of ``tables``."""
    from reproduce.report import orderings as od
    found = od.verdicts(tables)
    if not found:
        raise UserError("none of the paper's orderings has its rows in these tables",
                        hint="report the tables that hold them: " + ", ".join(sorted(
                            {t for o in od.orderings() for t, _ in (o.higher, o.lower)})))
    env = _env(autoescape=False)

    def side(s, metric: str) -> str:
        if s is None:
            return "-"
        if s.mean is None:
            return f"`{s.row}`: no finished seed (0/{s.planned})"
        spread = f" ± {fmt_spread(metric, s.std)}" if s.std is not None else ""
        return f"`{s.row}`: {fmt(metric, s.mean)}{spread} ({len(s.values)}/{s.planned})"

    env.filters["side"] = side
    env.filters["signed"] = lambda d, metric: "-" if d is None else metrics()[metric].format(d, True)
    env.filters["pvalue"] = lambda p: "-" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")
    counts = [(name, sum(v.verdict == name for v in found)) for name in (od.HOLDS, od.FAILS, od.NOISE, od.UNMEASURED)]
    return env.get_template("orderings.md.j2").render(profile=profile, verdicts=found, alpha=od.ALPHA,
                                                      counts=[c for c in counts if c[1]]) + "\n"


def cmd_report(args) -> int:
    profile, specs, runs = plan_args(args)
    tracker, records = None, {}
    if not args.paper:
        tracker = tracking.Tracker(tracking.check(tracking.resolve_uri(args.tracking_uri, default_dir=args.workdir),
                                                   read_only=True))
        records = JobStore.at(args.workdir).records(profile.name)
    from reproduce.sweep.datasets import fingerprint_today
    tables = gather(profile, specs, runs, tracker, records,
                    fingerprint_today(profile, args.workdir, runs) if tracker is not None else None,
                    args.stale_libraries)
    if args.format == "orderings":
        if tracker is None:
            raise UserError("--paper and --format orderings: the orderings are judged from trained seeds",
                            hint="drop --paper")
        doc = render_orderings(tables, profile)
        if args.output is None:
            sys.stdout.write(doc)
        else:
            args.output.mkdir(parents=True, exist_ok=True)
            (args.output / "orderings.md").write_text(doc)
            print(args.output / "orderings.md")
        return 0
    plots = {}
    if args.format == "html" or args.output:
        from reproduce.report.plots import make_plots
        plots = make_plots(tables, args.output or (args.workdir / "reports-tmp"))
    if args.format == "html" and tracker is not None:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            attach_maps(tables, tracker, Path(tmp))
    if args.output is None:
        if args.format == "html":
            for t in plots.values():
                t.pop("path", None)
        sys.stdout.write(render(tables, args.format, plots))
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    ext = {"md": "md", "tex": "tex", "html": "html", "json": "json"}[args.format]
    if args.format == "html":
        (args.output / "index.html").write_text(render(tables, "html", plots))
        print(args.output / "index.html")
        return 0
    written = []
    for t in tables:
        path = args.output / f"{t.table.name}.{ext}"
        path.write_text(render([t], args.format, plots))
        print(path)
        written.append(path)
    if args.format == "tex":
        compile_pdfs(written)
    return 0


def compile_pdfs(texs: list[Path]) -> None:
    """Each standalone .tex beside its PDF, when pdflatex is installed; one line
    saying so otherwise (the main job needs no TeX: the .tex files are the report)."""
    import shutil
    import subprocess
    if shutil.which("pdflatex") is None:
        print("reproduce: pdflatex not found: .tex written, PDF skipped (install texlive-latex-recommended for PDFs)",
              file=sys.stderr)
        return
    for tex in texs:
        try:
            out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name], cwd=tex.parent,
                                 capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            print(f"reproduce: pdflatex timed out on {tex}; .tex kept, PDF skipped", file=sys.stderr)
            continue
        for suffix in (".aux", ".log"):
            tex.with_suffix(suffix).unlink(missing_ok=True)
        if out.returncode == 0:
            print(tex.with_suffix(".pdf"))
        else:
            first = next((ln for ln in out.stdout.splitlines() if ln.startswith("!")), "see pdflatex's output")
            print(f"reproduce: pdflatex failed on {tex}: {first}; .tex kept, PDF skipped", file=sys.stderr)
