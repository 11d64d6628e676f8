"""The MuSu switches the paper ablates, defined once: each field, its default
and its check.

``mutual_assign`` takes them, ``MuSuHead`` builds them from its config, the
sweep specs are validated by constructing them, and the planner writes each
to ``config_path(name)``. A new ablation switch is a new field here (and its
test): nothing else lists them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any, ClassVar

CRITERIA = ("mutual", "cls", "reg")
BAG_IOU_OVER = ("containing", "all")   # docs/readings.md, reading 1
NORMALIZERS = ("batch", "image")       # docs/readings.md, reading 2


def _number(value: Any) -> float:
    """Floats, ints and fraction strings ("1/3", as the paper writes alpha)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value}")
        return float(value)
    if isinstance(value, str):
        try:
            return float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError):
            pass
    raise ValueError(f"expected a number or a fraction such as 1/3, got {value!r}")


def _in(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False):
    def check(v):
        x = _number(v)
        if x < lo or (lo_open and x == lo) or x > hi or (hi_open and x == hi):
            raise ValueError(f"must lie in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, got {v}")
        return x
    return check


def _positive(v):
    x = _number(v)
    if x <= 0:
        raise ValueError(f"must be positive, got {v}")
    return x


def _positive_or_none(v):
    return None if v is None else _positive(v)


def _one_of(choices: tuple[str, ...]):
    def check(v):
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {v!r}")
        return v
    return check


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _anchors(v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"#A must be an integer >= 1, got {v!r}")
    return v


@dataclass(frozen=True)
class Switches:
    """Section 3's assignment (alpha .. hard), Section 4.2's anchors and Eq. 7's beta."""

    alpha: float = 1.0 / 3.0      # Eq. 3: the regulariser (each head's own score to the power alpha)
    criteria: str = "mutual"      # Table 1: rank by the "mutual" criteria of Eq. 3, or "cls" (v = p) / "reg" (v = q)
    b: float = 0.1                # Eq. 2: a bag keeps anchors above b x its best joint score (Table 2)
    theta: float = 4.0            # Eq. 1: q = IoU ** theta
    tau_cls: float | None = None  # Eq. 4: temperature of the classification weights (None: Eq. 6's sqrt |C_j|; Table 3)
    tau_ratio: float = 2.0        # tau_reg = tau_cls / tau_ratio (Eq. 6's 2:1; Table 4)
    hard: bool = False            # Section 4.2, soft against hard: 0/1 weights instead of Eq. 4's
    # Procedure 1, line 4: an anchor joins j's bag when j has its highest IoU "across G", among
    # all objects of the image ("all", the paper's words and the default), or only among the
    # objects whose boxes contain its point ("containing", the reading trained before issue 25)
    bag_iou_over: str = "all"
    num_anchors: int = 1          # #A anchors per location (Tables 5 and 7)
    beta: float = 4.0             # Eq. 7: exponent of the negative penalty
    # Eq. 5: "the total loss in an image", normalised by that image's total weight N = sum w_i,
    # then averaged over images ("image", the paper's words and the default), or the batch's summed
    # loss over the batch's total weight (mmdet's convention, "batch", trained before issue 25)
    normalizer: str = "image"

    CHECKS: ClassVar[dict] = {
        "alpha": _in(0.0, 1.0), "criteria": _one_of(CRITERIA), "b": _in(0.0, 1.0, lo_open=True, hi_open=True),
        "theta": _positive, "tau_cls": _positive_or_none, "tau_ratio": _positive, "hard": _bool,
        "bag_iou_over": _one_of(BAG_IOU_OVER), "num_anchors": _anchors, "beta": _in(0.0, 1e3),
        "normalizer": _one_of(NORMALIZERS),
    }
    ASSIGNER: ClassVar[tuple[str, ...]] = ("alpha", "criteria", "b", "theta", "tau_cls", "tau_ratio", "hard",
                                           "bag_iou_over")

    def __post_init__(self) -> None:
        for f in fields(self):
            try:
                object.__setattr__(self, f.name, self.check(f.name, getattr(self, f.name)))
            except ValueError as exc:
                raise ValueError(f"{f.name}: {exc}") from None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def check(cls, name: str, value: Any) -> Any:
        """``value`` as the switch ``name`` holds it; ValueError naming the problem otherwise."""
        if name not in cls.CHECKS:
            raise ValueError(f"unknown switch {name!r}; known: {', '.join(cls.names())}")
        return cls.CHECKS[name](value)

    @classmethod
    def head_fields(cls) -> tuple[str, ...]:
        """The switches that are arguments of the head itself, not of its assigner."""
        return tuple(name for name in cls.names() if name not in cls.ASSIGNER)

    @classmethod
    def config_path(cls, name: str) -> str:
        """Where the switch lives in an mmdet config of MuSu."""
        return f"model.bbox_head.assigner.{name}" if name in cls.ASSIGNER else f"model.bbox_head.{name}"

    def assigner(self) -> dict[str, Any]:
        """The keyword arguments of ``mutual_assign``."""
        return {name: getattr(self, name) for name in self.ASSIGNER}
