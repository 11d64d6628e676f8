"""Does an ordering the paper reports hold at this scale? Welch's t-test over seeds, Holm-corrected.

A small-scale profile cannot match the paper's COCO numbers, but it can say
whether the paper's *orderings* (MuSu above FCOS, soft above hard, ...) show
up beyond seed spread. ``sweeps/vocabulary/orderings.yaml`` lists every one
the paper reports as data; each is judged from the seeds of its two rows, as
``report.gather`` found them, with one rule written down once:

- each measured ordering gets Welch's two-sided t-test over the two rows'
  seeds (``welch``): the difference of the means, its 95% confidence interval
  and p;
- the p-values of the orderings one report measures are corrected together
  by Holm's step-down method (``holm``): a page of 20 orderings judged at
  0.05 each would show one "holds" by chance alone. The family is the page:
  the orderings measured in that report;
- **holds**: the corrected p < ``ALPHA`` and the higher row's mean is above
  the lower's; **does not hold**: the corrected p < ``ALPHA`` the other way;
  **within noise**: neither;
- **not measured**, with the reason: a row the profile does not train (its
  ``rows:``, a reference row, a table not in the report) or one with fewer
  than two finished seeds (no spread to judge against).

A two-sided test, not a one-sided one in the paper's direction, so that
"does not hold" is decided at the same level as "holds", and so that one
correction covers both. No threshold is tuned to a result: ``ALPHA`` is the
conventional 0.05.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from reproduce.errors import UserError
from reproduce.metrics import metrics
from reproduce.schema import known_keys, load_yaml, mapping, text
from reproduce.sweep.spec import SWEEPS_DIR

VOCABULARY = SWEEPS_DIR / "vocabulary" / "orderings.yaml"
KEYS = {"claim", "evidence", "metric", "higher", "lower"}
ALPHA = 0.05

HOLDS, FAILS, NOISE, UNMEASURED = "holds", "does not hold", "within noise", "not measured"
# each verdict's colour on the pictures and the HTML page (green, red, grey, light grey)
VERDICT_COLOURS = {HOLDS: "#176d2b", FAILS: "#a12020", NOISE: "#7a7a7a", UNMEASURED: "#a0a0a0"}


@dataclass(frozen=True)
class Ordering:
    """The paper's claim that row ``higher`` beats row ``lower`` on ``metric``; rows are (table, row)."""
    claim: str
    evidence: str
    metric: str
    higher: tuple[str, str]
    lower: tuple[str, str]


@cache
def orderings(path: Path = VOCABULARY) -> tuple[Ordering, ...]:
    file = str(path)
    data = load_yaml(path)
    if not isinstance(data, list):
        raise UserError(f"the orderings are a list, got {type(data).__name__}", file=file)
    out = []
    for i, raw in enumerate(data):
        where = f"[{i}]"
        mapping(raw, file, "an ordering", field=where)
        known_keys(raw, KEYS, file, prefix=f"{where}.")
        def required(key: str) -> str:
            return text(raw, key, file, prefix=f"{where}.", required=True)
        metric = required("metric")
        if metric not in metrics():
            raise UserError(f"unknown metric {metric!r}", file=file, field=f"{where}.metric",
                            hint=f"metrics: {', '.join(metrics())}")
        sides = []
        for side in ("higher", "lower"):
            table, sep, row = required(side).partition("/")
            if not sep or not table or not row:
                raise UserError("expected TABLE/ROW, e.g. table1/fcos", file=file, field=f"{where}.{side}")
            sides.append((table, row))
        out.append(Ordering(required("claim"), required("evidence"),
                            metric, sides[0], sides[1]))
        if any(o.claim == out[-1].claim for o in out[:-1]):  # a page row is read by its claim
            raise UserError(f"claim {out[-1].claim!r} is listed twice", file=file, field=f"{where}.claim",
                            hint="say what differs (the rows, the metric), or quote a claim holding ' #'")
    return tuple(out)


@dataclass(frozen=True)
class Side:
    """One row of an ordering, as the report's cell has it (its mean and std, never recomputed here)."""
    row: str                   # table/row, as the orderings name it
    values: tuple[float, ...]  # one per finished seed
    planned: int               # seeds planned
    mean: float | None
    std: float | None


@dataclass(frozen=True)
class Welch:
    """Welch's two-sided t-test of "higher - lower": the effect in the metric's units and its 95% interval."""
    difference: float
    low: float
    high: float
    p: float

    @property
    def exact(self) -> bool:
        """No spread on either side (counts such as parameters): the difference is known, no test applies."""
        return self.low == self.high


@dataclass(frozen=True)
class Verdict:
    ordering: Ordering
    higher: Side | None  # None: the row is not in the report
    lower: Side | None
    verdict: str
    test: Welch | None = None   # None: not measured
    p_holm: float | None = None  # ``test.p`` corrected over the report's measured orderings
    why: str = ""

    @property
    def difference(self) -> float | None:
        if self.higher is None or self.lower is None or self.higher.mean is None or self.lower.mean is None:
            return None
        return self.higher.mean - self.lower.mean


def welch(higher: list[float], lower: list[float]) -> Welch | None:
    """The test of one ordering (scipy's Welch test and its interval); None when a side has
    fewer than two values (no spread to judge against)."""
    if len(higher) < 2 or len(lower) < 2:
        return None
    from statistics import fmean

    from scipy.stats import ttest_ind
    d = fmean(higher) - fmean(lower)
    if max(higher) == min(higher) and max(lower) == min(lower):  # no spread: the difference is exact, no test
        return Welch(d, d, d, 0.0 if d else 1.0)
    result = ttest_ind(higher, lower, equal_var=False)
    interval = result.confidence_interval(0.95)
    return Welch(d, float(interval.low), float(interval.high), float(result.pvalue))


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment of ``ps`` (the family-wise error stays below the level used)."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def decide(test: Welch, p_holm: float) -> str:
    if p_holm < ALPHA and test.difference > 0:
        return HOLDS
    if p_holm < ALPHA and test.difference < 0:
        return FAILS
    return NOISE


def verdicts(tables: list, trained: dict[str, list[str]] | None = None, profile: str = "") -> list[Verdict]:
    """Every ordering, judged where ``tables`` (``report.ReportTable``) hold both rows' seeds, else
    said to be not measured and why. ``trained``: the profile's ``rows:`` (None: every row)."""
    cells, in_report = {}, {t.table.name for t in tables}
    for t in tables:
        for row in t.rows:
            for cell in row.cells:
                cells[(t.table.name, row.name, cell.metric)] = (row, cell, row.runs_planned)
    pending = []
    for o in orderings():
        sides, whys = [], []
        for table, row in (o.higher, o.lower):
            found = cells.get((table, row, o.metric))
            if found is None:
                sides.append(None)
                whys.append(_absent(table, row, o.metric, in_report, trained, profile))
                continue
            r, cell, planned = found
            sides.append(Side(f"{table}/{row}", tuple(cell.values), planned, cell.value, cell.std))
            if r.status == "reference":
                whys.append(f"{table}/{row} is a reference row (the paper's numbers; the suite does not train it)")
            elif len(cell.values) < 2:
                whys.append(f"{table}/{row} has {len(cell.values)} finished seed{'s' * (len(cell.values) != 1)} "
                            f"of {planned}, two are needed for a spread")
        test = None if whys else welch(list(sides[0].values), list(sides[1].values))
        pending.append((o, sides, test, "; ".join(dict.fromkeys(whys))))
    adjusted = iter(holm([test.p for _, _, test, _ in pending if test is not None]))
    out = []
    for o, sides, test, why in pending:
        if test is None:
            out.append(Verdict(o, sides[0], sides[1], UNMEASURED, why=why))
        else:
            p = next(adjusted)
            out.append(Verdict(o, sides[0], sides[1], decide(test, p), test, p))
    return out


def _absent(table: str, row: str, metric: str, in_report: set[str], trained: dict[str, list[str]] | None,
            profile: str) -> str:
    """Why a row of an ordering has no cell in the report."""
    if trained is not None and row not in trained.get(table, []):
        return f"profile {profile} does not train {table}/{row} (its `rows:`)"
    if table not in in_report:
        return f"{table} is not in this report"
    return f"{table}/{row} has no {metric} in this report"
