"""Sweep specs (``sweeps/*.yaml``): loading, validation and row expansion.

A spec is data: it is read with ``yaml.safe_load`` (never executes code) and
validated field by field before anything runs. Grids and zips keep a spec
short; the expanded rows must match the paper's table row for row.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reproduce.errors import UserError
from reproduce.metrics import metrics
from reproduce.schema import integer, known_keys, load_yaml, mapping
from reproduce.paths import REPO

SWEEPS_DIR = REPO / "sweeps"
METHODS = ("musu", "fcos", "fcospp", "atss", "paa", "autoassign", "freeanchor", "sapd", "mal")
BACKBONES = ("r50", "r101", "r101-dcn")
SCHEDULES = ("1x", "2x")
MAX_ROWS = 10_000  # rows a table may expand to (a grid is counted before it is built)
EVAL_SPLITS = ("test-dev",)  # the paper's unlabeled split (COCO test-dev), scored by COCO's server
TABLE_KEYS = {"table", "title", "caption", "columns", "defaults", "rows", "eval_split", "mark_best", "plot"}
PLOT_KEYS = {"x", "group", "xlabel", "skip_rows_setting"}
ROW_KEYS = {"name", "label", "section", "method", "backbone", "schedule", "set", "paper", "reference", "train",
            "seeds", "grid", "zip"}
DEFAULT_KEYS = ROW_KEYS - {"name", "label", "paper", "grid", "zip"}


# The switches a row may set, their defaults and checks: musu.core.switches
# (imported lazily; it needs no torch, but the planner should not pay for musu).
def _switches():
    from musu.core.switches import Switches
    return Switches


def _number(value: Any) -> float:
    from musu.core.switches import _number as number
    return number(value)


@dataclass(frozen=True)
class Row:
    """One expanded row of a paper table."""

    table: str
    index: int
    name: str
    label: str
    section: str | None
    method: str
    backbone: str
    schedule: str
    switches: dict[str, Any]
    paper: dict[str, float]
    reference: bool = False
    train: bool = True
    seeds: int = 1

    @property
    def trained(self) -> bool:
        return self.train and not self.reference

    @property
    def key(self) -> str:
        return f"{self.method}/{self.backbone}/{self.schedule}"


@dataclass(frozen=True)
class Plot:
    """AP against one switch, one curve per value of ``group`` (``plots.py`` draws it)."""
    x: str
    group: str | None
    xlabel: str
    skip_rows_setting: tuple[str, ...] = ()  # rows that set one of these are left out (Table 1's v = p rows)


@dataclass
class Table:
    name: str
    title: str
    caption: str
    columns: list[str]
    rows: list[Row]
    file: str
    eval_split: str | None = None
    mark_best: bool = True    # the paper bolds each column's best value; Table 7 marks none
    plot: Plot | None = None


def _fmt(template: str, values: dict[str, Any], file: str, row: str) -> str:
    """Fill ``{switch}`` placeholders; other braces (LaTeX) are left alone."""
    def fill(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise UserError(f"placeholder {{{key}}} names no grid or zip key of this row", file=file, row=row,
                            field="name", hint=f"placeholders available here: {sorted(values) or 'none'}")
        return _label(values[key])
    return re.sub(r"\{(" + "|".join(_switches().names()) + r")\}", fill, template)


def _label(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


def _check_switches(values: Any, file: str, row: str, where: str) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"expected a mapping of switches, got {type(values).__name__}", file=file, row=row, field=where)
    switches = _switches()
    out = {}
    for key, value in values.items():
        if key not in switches.names():
            raise UserError(f"unknown switch {key!r}", file=file, row=row, field=f"{where}.{key}",
                            hint=f"known switches: {', '.join(switches.names())}")
        try:
            out[key] = switches.check(key, value)
        except (ValueError, TypeError) as exc:
            raise UserError(str(exc), file=file, row=row, field=f"{where}.{key}") from None
    return out


def _check_choice(value: Any, choices, file, row, fld):
    if value not in choices:
        raise UserError(f"must be one of {', '.join(choices)}, got {value!r}", file=file, row=row, field=fld)
    return value


def _check_paper(values: Any, columns: list[str], file: str, row: str) -> dict[str, float]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"expected a mapping of metric to number, got {type(values).__name__}", file=file, row=row,
                        field="paper")
    out = {}
    for key, value in values.items():
        if key not in columns:
            raise UserError(f"metric {key!r} is not a column of this table ({', '.join(columns)})", file=file,
                            row=row, field=f"paper.{key}")
        try:
            out[key] = _number(value)
        except ValueError as exc:
            raise UserError(str(exc), file=file, row=row, field=f"paper.{key}") from None
    return out


def _expand(raw: dict, file: str, position: int) -> list[tuple[dict, dict]]:
    """(switch values for the name template, raw row) per expanded row."""
    label = str(raw.get("name", f"#{position + 1}"))
    grid, zipped = raw.get("grid"), raw.get("zip")
    if grid is not None and zipped is not None:
        raise UserError("a row may have a grid or a zip, not both", file=file, row=label, field="grid")
    spread = grid if grid is not None else zipped
    if spread is None:
        return [({}, raw)]
    kind = "grid" if grid is not None else "zip"
    if not isinstance(spread, dict) or not spread:
        raise UserError("expected a non-empty mapping of switch to list of values", file=file, row=label, field=kind)
    for key, values in spread.items():
        if key not in _switches().names():
            raise UserError(f"unknown switch {key!r}", file=file, row=label, field=f"{kind}.{key}",
                            hint=f"known switches: {', '.join(_switches().names())}")
        if not isinstance(values, list) or not values:
            raise UserError("expected a non-empty list of values", file=file, row=label, field=f"{kind}.{key}")
    keys = list(spread)
    if kind == "grid":
        count = math.prod(len(spread[k]) for k in keys)
        if count > MAX_ROWS:  # counted before a single row is made
            raise UserError(f"this grid makes {count:,} rows, more than the {MAX_ROWS:,} a table may have", file=file,
                            row=label, field="grid", hint="drop values, or split the sweep into several specs")
        combos = list(itertools.product(*(spread[k] for k in keys)))
    else:
        lengths = {len(spread[k]) for k in keys}
        if len(lengths) != 1:
            raise UserError("zip lists must have equal lengths", file=file, row=label, field="zip")
        combos = list(zip(*(spread[k] for k in keys)))
    paper = raw.get("paper")
    if paper is not None and (not isinstance(paper, list) or len(paper) != len(combos)):
        raise UserError(f"a {kind} of {len(combos)} rows needs a list of {len(combos)} paper entries", file=file,
                        row=label, field="paper")
    out = []
    for i, combo in enumerate(combos):
        values = dict(zip(keys, combo))
        row = {k: v for k, v in raw.items() if k not in ("grid", "zip", "paper")}
        row["set"] = {**(raw.get("set") or {}), **values} if isinstance(raw.get("set") or {}, dict) else raw.get("set")
        row["paper"] = paper[i] if paper is not None else None
        out.append((values, row))
    return out


def parse_table(data: Any, file: str) -> Table:
    """Validate a loaded spec and expand its rows."""
    mapping(data, file, f"a sweep spec (keys {', '.join(sorted(TABLE_KEYS))})")
    known_keys(data, TABLE_KEYS, file)
    for key in ("table", "columns", "rows"):
        if key not in data:
            raise UserError("missing", file=file, field=key)
    name = data["table"]
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]+", name):
        raise UserError(f"must be a lower-case identifier, got {name!r}", file=file, field="table")
    columns = data["columns"]
    known = metrics()
    if not isinstance(columns, list) or not columns or any(not isinstance(c, str) or c not in known for c in columns):
        raise UserError(f"must be a non-empty list drawn from {', '.join(known)}, got {columns!r}", file=file,
                        field="columns", hint="the columns are sweeps/vocabulary/metrics.yaml's")
    mark_best = data.get("mark_best", True)
    if not isinstance(mark_best, bool):
        raise UserError(f"expected true or false, got {mark_best!r}", file=file, field="mark_best")
    plot = _check_plot(data.get("plot"), columns, file)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise UserError("expected a mapping", file=file, field="defaults")
    known_keys(defaults, DEFAULT_KEYS, file, prefix="defaults.")
    rows_raw = data["rows"]
    if not isinstance(rows_raw, list) or not rows_raw:
        raise UserError("expected a non-empty list of rows", file=file, field="rows")
    rows: list[Row] = []
    seen: set[str] = set()
    for position, raw in enumerate(rows_raw):
        mapping(raw, file, "a row", row=f"#{position + 1}")
        known_keys(raw, ROW_KEYS, file, row=str(raw.get("name", f"#{position + 1}")))
        if not isinstance(raw.get("name"), str) or not raw["name"].strip():
            raise UserError("every row needs a name (a string)", file=file, row=f"#{position + 1}", field="name")
        expanded = _expand(raw, file, position)
        if len(rows) + len(expanded) > MAX_ROWS:
            raise UserError(f"the rows make {len(rows) + len(expanded):,} or more, more than the {MAX_ROWS:,} a table "
                            "may have", file=file, row=str(raw["name"]), field="rows",
                            hint="split the sweep into several specs")
        for values, row in expanded:
            rows.append(_make_row(name, len(rows), row, values, defaults, columns, file))
            if rows[-1].name in seen:
                raise UserError("duplicate row name", file=file, row=rows[-1].name, field="name",
                                hint="row names must be unique within a table")
            seen.add(rows[-1].name)
    eval_split = data.get("eval_split")
    if eval_split is not None and eval_split not in EVAL_SPLITS:
        # (it turns on the profile's unlabeled split for every row: a typo must not pass silently)
        raise UserError(f"eval_split {eval_split!r} is not one the suite knows", file=file, field="eval_split",
                        hint=f"use {', '.join(EVAL_SPLITS)} (rows then also write detections on the profile's "
                             "test_info split), or leave it out")
    return Table(name=name, title=str(data.get("title", name)), caption=str(data.get("caption", "")),
                 columns=list(columns), rows=rows, file=file, eval_split=eval_split,
                 mark_best=mark_best, plot=plot)


def _check_plot(raw: Any, columns: list[str], file: str) -> Plot | None:
    if raw is None:
        return None
    mapping(raw, file, "a plot", field="plot")
    known_keys(raw, PLOT_KEYS, file, prefix="plot.")
    names = _switches().names()
    for key in ("x", "group"):
        if raw.get(key) is not None and raw[key] not in names:
            raise UserError(f"{raw[key]!r} is not a MuSu switch", file=file, field=f"plot.{key}",
                            hint=f"switches: {', '.join(names)}")
    if raw.get("x") is None:
        raise UserError("missing: the switch on the x axis", file=file, field="plot.x")
    if "AP" not in columns:
        raise UserError("a plot shows AP, and this table has no AP column", file=file, field="plot")
    skip = raw.get("skip_rows_setting") or []
    if not isinstance(skip, list) or any(s not in names for s in skip):
        raise UserError(f"expected a list of switches, got {skip!r}", file=file, field="plot.skip_rows_setting")
    return Plot(raw["x"], raw.get("group"), str(raw.get("xlabel", raw["x"])), tuple(skip))


def _make_row(table: str, index: int, raw: dict, values: dict, defaults: dict, columns: list[str], file: str) -> Row:
    label_name = _fmt(raw["name"], values, file, raw["name"])
    merged = {**defaults, **{k: v for k, v in raw.items() if v is not None or k == "set"}}
    method = _check_choice(merged.get("method", "musu"), METHODS, file, label_name, "method")
    backbone = _check_choice(merged.get("backbone", "r50"), BACKBONES, file, label_name, "backbone")
    schedule = _check_choice(merged.get("schedule", "1x"), SCHEDULES, file, label_name, "schedule")
    switches = {**_check_switches(defaults.get("set"), file, label_name, "defaults.set"),
                **_check_switches(raw.get("set"), file, label_name, "set")}
    if switches and method != "musu":
        raise UserError(f"MuSu switches {sorted(switches)} apply to method musu only, this row is {method}",
                        file=file, row=label_name, field="set")
    flags = {}
    for key, default in (("reference", False), ("train", None)):
        value = merged.get(key, default)
        if value is not None and not isinstance(value, bool):
            raise UserError(f"expected true or false, got {value!r}", file=file, row=label_name, field=key)
        flags[key] = value
    seeds = integer(merged, "seeds", file, default=1, minimum=1, maximum=100, row=label_name)
    reference = flags["reference"]
    train = True if flags["train"] is None else flags["train"]
    if reference and flags["train"]:
        reference = False  # a reference row switched to a trained row
    for text_field in ("label", "section"):
        if text_field in raw and raw[text_field] is not None and not isinstance(raw[text_field], (str, int, float)):
            raise UserError("expected text", file=file, row=label_name, field=text_field)
    label = _fmt(str(raw.get("label", raw["name"])), values, file, label_name)
    section = merged.get("section")
    return Row(table=table, index=index, name=label_name, label=label,
               section=None if section is None else _fmt(str(section), values, file, label_name),
               method=method, backbone=backbone, schedule=schedule, switches=switches,
               paper=_check_paper(raw.get("paper"), columns, file, label_name),
               reference=reference, train=train, seeds=seeds)


def load_table_file(path: str | Path) -> Table:
    path = Path(path)
    data = load_yaml(path)
    table = parse_table(data, str(path))
    if table.name != path.stem:
        raise UserError(f"the table is named {table.name!r} but the file is {path.name}", file=str(path),
                        field="table", hint=f"name the file {table.name}.yaml or the table {path.stem!r}")
    return table


def available_tables(sweeps_dir: Path = SWEEPS_DIR) -> list[str]:
    return sorted(p.stem for p in sweeps_dir.glob("*.yaml"))


def load_tables(selector: str, sweeps_dir: Path = SWEEPS_DIR) -> list[Table]:
    """``table1``, ``table1,table3``, ``all``, or the user's own spec files and
    folders of them (``my_grid.yaml``, ``my_specs/``), beside the suite's tables."""
    known = available_tables(sweeps_dir)
    names = known if selector == "all" else [s.strip() for s in selector.split(",")]
    if not all(names):
        raise UserError(f"{selector!r} names an empty table", hint="tables are comma-separated names or spec files, "
                        "e.g. table1,table6, or all")
    out = []
    for name in names:
        if _is_path(name):
            out += _own_specs(Path(name), known)
        elif name not in known:
            raise UserError(f"unknown table {name!r}", hint=f"known tables: {', '.join(known)}, or all, "
                            "or a spec file path")
        else:
            out.append(load_table_file(sweeps_dir / f"{name}.yaml"))
    return out


def _is_path(name: str) -> bool:
    return "/" in name or name.endswith((".yaml", ".yml")) or Path(name).is_dir()


def _own_specs(path: Path, suite_tables: list[str]) -> list[Table]:
    """A user's spec file, or every spec of a folder; a table name of the suite's is refused."""
    if path.is_dir():
        files = sorted(p for p in [*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise UserError(f"no spec files (*.yaml) in {path}", hint="a spec: table:, columns:, rows:")
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"no spec file {path}", hint="give an existing spec file or folder, or a table name")
    tables = [load_table_file(f) for f in files]
    for table in tables:
        if table.name in suite_tables:
            raise UserError(f"table name {table.name!r} is the suite's {table.name}", file=table.file,
                            field="table", hint="give your table a name of its own")
    return tables
