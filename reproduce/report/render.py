"""The gathered tables as text: Markdown, LaTeX (booktabs, a standalone
document, a PDF where pdflatex is installed), a self-contained HTML page with
plots, JSON for scripts, and the orderings document, through the jinja2
templates in ``reports/templates``."""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import jinja2

from reproduce.errors import UserError
from reproduce.metrics import metrics
from reproduce.paths import REPO
from reproduce.report.gather import ReportTable
from reproduce.sweep.profiles import Profile

TEMPLATES = REPO / "reports" / "templates"


def fmt(metric: str, value: float | None) -> str:
    """Numbers as the paper prints them (``metrics.yaml``: AP 40.6, params 32.07M, FLOPs 205.3G)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return metrics()[metric].format(value)


def fmt_spread(metric: str, std: float | None) -> str:
    """A seed spread in the metric's own decimals (``1.7`` beside AP 40.6); '' without one."""
    return "" if std is None else f"{std:.{metrics()[metric].decimals}f}"


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
    env.filters["code_spans"] = code_spans
    # the orderings (``judged``): a row's seeds, the effect, p before and after Holm's correction
    env.filters["side"] = _side
    env.filters["effect"] = _effect
    env.filters["raw_p"] = lambda v: "-" if v.test is None else ("exact" if v.test.exact else _pvalue(v.test.p))
    env.filters["holm_p"] = lambda v: "-" if v.test is None else ("exact" if v.test.exact else _pvalue(v.p_holm))
    env.globals.update(HEADERS={k: m.tex for k, m in metrics().items()}, MD_HEADERS={k: m.md for k, m in metrics().items()},
                       VERDICT_COLOURS=_verdict_colours())
    return env


def _verdict_colours() -> dict[str, str]:
    from reproduce.report.orderings import VERDICT_COLOURS
    return VERDICT_COLOURS


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


def code_spans(text: str) -> "jinja2.utils.Markup":
    """Markdown's `code` spans in a sentence (the orderings' reasons) as HTML's <code>, the rest escaped."""
    from markupsafe import Markup, escape
    parts = str(text).split("`")
    return Markup("".join(str(escape(p)) if i % 2 == 0 else f"<code>{escape(p)}</code>" for i, p in enumerate(parts)))


def md_label(text: str) -> str:
    return str(text).replace("|", "\\|")


def render(tables: list[ReportTable], fmt_name: str, plots: dict[str, dict[str, str]] | None = None,
           orderings: dict | None = None) -> str:
    """``tables`` in one format; the HTML page also shows ``orderings`` (``judged``, with its
    ``plot``) when given."""
    if fmt_name == "json":
        return json.dumps([dict(table=t.table.name, profile=t.profile, paper_only=t.paper_only,
                                columns=t.table.columns, no_difference_because=t.unlike_paper or None,
                                rows=[dict(name=r.name, label=r.label, section=r.section, status=r.status,
                                           detail=r.detail, runs=r.runs, stale=r.stale, submit=r.submit,
                                           cells={c.metric: c.as_json() for c in r.cells}) for r in t.rows])
                           for t in tables], indent=1)
    template = {"md": "table.md.j2", "tex": "document.tex.j2", "html": "page.html.j2"}[fmt_name]
    env = _env(autoescape=fmt_name == "html")
    text = env.get_template(template).render(tables=tables, plots=plots or {}, orderings=orderings)
    return re.sub(r"\n{3,}", "\n\n", text) if fmt_name == "md" else text


def judged(tables: list[ReportTable], profile: Profile) -> dict:
    """Every ordering the paper reports (``reproduce.report.orderings``), judged where ``tables``
    hold both rows' seeds and said to be not measured, and why, elsewhere: what the orderings
    document and the HTML page's orderings section show (``plot``: their picture, when drawn)."""
    from reproduce.report import orderings as od
    found = od.verdicts(tables, profile.rows, profile.name)
    counts = [(name, sum(v.verdict == name for v in found)) for name in (od.HOLDS, od.FAILS, od.NOISE, od.UNMEASURED)]
    return dict(profile=profile, verdicts=found, alpha=od.ALPHA, measured=sum(v.test is not None for v in found),
                counts=[c for c in counts if c[1]], plot=None)


def concerns_orderings(tables: list[ReportTable]) -> bool:
    """Whether any ordering of the paper has a row in ``tables`` (else there is nothing to judge)."""
    from reproduce.report import orderings as od
    named = {t.table.name for t in tables}
    return any(t in named for o in od.orderings() for t, _ in (o.higher, o.lower))


def require_orderings(tables: list[ReportTable]) -> None:
    """``--format orderings`` of tables no ordering concerns is refused on one line."""
    from reproduce.report import orderings as od
    if not concerns_orderings(tables):
        raise UserError("none of the paper's orderings has its rows in these tables",
                        hint="report the tables that hold them: " + ", ".join(sorted(
                            {t for o in od.orderings() for t, _ in (o.higher, o.lower)})))


def render_orderings(page: dict) -> str:
    """The orderings document: ``judged``'s page as Markdown (its picture linked beside it when drawn)."""
    return _env(autoescape=False).get_template("orderings.md.j2").render(**page) + "\n"


def _side(s, metric: str, quote: str = "`") -> str:
    """One row of an ordering: its mean ± std over seeds (finished/planned); ``quote`` marks the
    row's name as code (Markdown's backtick; none on the HTML page)."""
    if s is None:
        return "-"
    name = f"{quote}{s.row}{quote}"
    if s.mean is None:
        return f"{name}: no finished seed (0/{s.planned})"
    spread = f" ± {fmt_spread(metric, s.std)}" if s.std is not None else ""
    return f"{name}: {fmt(metric, s.mean)}{spread} ({len(s.values)}/{s.planned})"


def _effect(v, metric: str) -> str:
    """An ordering's effect: higher minus lower with its 95% interval, in the metric's units."""
    if v.test is None:
        return "-"
    show = metrics()[metric].format
    return f"{show(v.test.difference, True)} [{show(v.test.low, True)}, {show(v.test.high, True)}]"


def _pvalue(p: float | None) -> str:
    return "-" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


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
