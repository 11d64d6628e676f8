"""Framework-free MuSu math: the paper's equations as pure torch functions.

Imported lazily, so that ``musu.core.switches`` (the sweep specs' vocabulary)
is read without importing torch.
"""
from __future__ import annotations

_WHERE = {"MutualAssignResult": "assign", "mutual_assign": "assign", "rank_within_groups": "assign",
          "iou_pairwise": "boxes", "focal_neg": "losses", "focal_pos": "losses", "giou_loss": "losses",
          "mutual_focal_loss": "losses", "weighted_giou_loss": "losses", "Switches": "switches",
          "HeadConsistency": "consistency", "image_consistency": "consistency"}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'musu.core' has no attribute {name!r}")
