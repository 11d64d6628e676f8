"""Does an ordering the paper reports hold at this scale? Welch's t-test over seeds.

A small-scale profile cannot match the paper's COCO numbers, but it can say
whether the paper's *orderings* (MuSu above FCOS, soft above hard, ...) show
up beyond seed spread. ``sweeps/vocabulary/orderings.yaml`` lists them as data;
each is judged from the seeds of its two rows, as ``report.gather`` found
them, with one rule written down once (``judge``):

- **holds**: the higher row's mean exceeds the lower's, and Welch's one-sided
  t-test in the paper's direction gives p < ``ALPHA``;
- **does not hold**: the same test in the opposite direction gives p < ``ALPHA``;
- **within noise**: neither (including equal means);
- **not measured**: a row with fewer than two finished seeds (no spread to
  judge against), or a table without the metric's column.

No threshold is tuned to a result: ``ALPHA`` is the conventional 0.05.
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
class Verdict:
    ordering: Ordering
    higher: Side | None  # None: the row is not in the report (another profile's rows, another table)
    lower: Side | None
    verdict: str
    p: float | None      # the one-sided p-value of the direction that decided, else of the paper's
    why: str = ""

    @property
    def difference(self) -> float | None:
        if self.higher is None or self.lower is None or self.higher.mean is None or self.lower.mean is None:
            return None
        return self.higher.mean - self.lower.mean


def judge(higher: list[float], lower: list[float]) -> tuple[str, float | None]:
    """The verdict on "``higher`` beats ``lower``" and its p-value (module docstring)."""
    if len(higher) < 2 or len(lower) < 2:
        return UNMEASURED, None
    from scipy.stats import ttest_ind
    if max(higher) == min(higher) and max(lower) == min(lower):  # no spread at all: a t-test is undefined
        d = higher[0] - lower[0]
        return (HOLDS if d > 0 else FAILS if d < 0 else NOISE), (0.0 if d else 1.0)
    p_paper = float(ttest_ind(higher, lower, equal_var=False, alternative="greater").pvalue)
    p_other = float(ttest_ind(higher, lower, equal_var=False, alternative="less").pvalue)
    if p_paper < ALPHA:
        return HOLDS, p_paper
    if p_other < ALPHA:
        return FAILS, p_other
    return NOISE, p_paper


def verdicts(tables: list) -> list[Verdict]:
    """Each ordering whose two rows are among ``tables`` (``report.ReportTable``), judged."""
    cells = {}
    for t in tables:
        for row in t.rows:
            for cell in row.cells:
                cells[(t.table.name, row.name, cell.metric)] = (row, cell, row.runs_planned)
    out = []
    for o in orderings():
        sides, why = [], ""
        for table, row in (o.higher, o.lower):
            found = cells.get((table, row, o.metric))
            if found is None:
                sides.append(None)
                why = why or f"{table}/{row} has no {o.metric} in this report"
                continue
            r, cell, planned = found
            sides.append(Side(f"{table}/{row}", tuple(cell.values), planned, cell.value, cell.std))
        if sides[0] is None and sides[1] is None:
            continue  # neither row is in this report: not this profile's ordering
        if None in sides:
            out.append(Verdict(o, sides[0], sides[1], UNMEASURED, None, why))
            continue
        verdict, p = judge(list(sides[0].values), list(sides[1].values))
        if verdict == UNMEASURED:
            why = "fewer than two finished seeds on a side"
        out.append(Verdict(o, sides[0], sides[1], verdict, p, why))
    return out
