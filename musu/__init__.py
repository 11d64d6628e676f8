"""MuSu: Mutual Supervision for Dense Object Detection (ICCV 2021).

The package root exposes the framework-free math; the mmdet head and configs
live in ``musu.models`` and ``musu/configs`` and are imported only by mmdet
configs (``custom_imports``), so the math works without mmdet installed.
"""
from .core import MutualAssignResult, giou_loss, mutual_assign, mutual_focal_loss, weighted_giou_loss

__all__ = ["MutualAssignResult", "mutual_assign", "mutual_focal_loss", "giou_loss", "weighted_giou_loss"]
__version__ = "0.1.0"
