"""The metric vocabulary (``sweeps/vocabulary/metrics.yaml``), read once.

Which numbers a table can show, where a job finds each (a COCO key or its
own measurement) and how a report prints it are data beside the specs, so
a new column is a line of YAML, not an edit to the spec checks, the job
and the report at once.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from reproduce.errors import UserError
from reproduce.schema import integer, known_keys, load_yaml, mapping, text
from reproduce.paths import REPO

VOCABULARY = REPO / "sweeps" / "vocabulary" / "metrics.yaml"
KEYS = {"source", "tex", "md", "decimals", "unit", "best"}


@dataclass(frozen=True)
class Metric:
    name: str
    source: str          # "coco/<key>" or "measured"
    tex: str
    md: str
    decimals: int = 1
    unit: str = ""
    best: str = "higher"  # higher | none

    @property
    def coco_key(self) -> str | None:
        return self.source if self.source.startswith("coco/") else None

    def format(self, value: float, signed: bool = False) -> str:
        """As the paper prints it: AP 40.6, params 32.07M; ``signed`` for a difference (+0.3)."""
        return f"{value:+.{self.decimals}f}" if signed else f"{value:.{self.decimals}f}{self.unit}"


@functools.cache
def metrics(path: Path = VOCABULARY) -> dict[str, Metric]:
    file = str(path)
    out = {}
    for name, raw in mapping(load_yaml(path), file, "the metric vocabulary").items():
        mapping(raw, file, "a metric", field=str(name))
        known_keys(raw, KEYS, file, prefix=f"{name}.")
        source = text(raw, "source", file, prefix=f"{name}.")
        if not source or not (source == "measured" or source.startswith("coco/")):
            raise UserError(f"must be coco/<key> or measured, got {source!r}", file=file, field=f"{name}.source")
        best = text(raw, "best", file, default="higher", prefix=f"{name}.")
        if best not in ("higher", "none"):
            raise UserError(f"must be higher or none, got {best!r}", file=file, field=f"{name}.best")
        out[str(name)] = Metric(str(name), source, text(raw, "tex", file, str(name), prefix=f"{name}."),
                                text(raw, "md", file, str(name), prefix=f"{name}."),
                                integer(raw, "decimals", file, default=1, maximum=6, prefix=f"{name}."),
                                text(raw, "unit", file, "", prefix=f"{name}."), best)
    return out


def coco_keys() -> dict[str, str]:
    """mmdet's COCO metric key -> the column it fills (``coco/bbox_mAP`` -> ``AP``)."""
    return {m.coco_key: m.name for m in metrics().values() if m.coco_key}
