"""MuSu: Mutual Supervision for Dense Object Detection (ICCV 2021).

The package root exposes the framework-free math; the mmdet head and configs
live in ``musu.models`` and ``musu/configs`` and are imported only by mmdet
configs (``custom_imports``), so the math works without mmdet installed.
The math is imported on first use, so tools that only read configs (the
``reproduce`` planner) do not pay for importing torch.
"""
from __future__ import annotations

__all__ = ["MutualAssignResult", "mutual_assign", "mutual_focal_loss", "giou_loss", "weighted_giou_loss"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in __all__:
        from . import core
        return getattr(core, name)
    raise AttributeError(f"module 'musu' has no attribute {name!r}")
