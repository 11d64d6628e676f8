"""Framework-free MuSu math: the paper's equations as pure torch functions."""
from .assign import MutualAssignResult, mutual_assign, rank_within_groups
from .boxes import iou_pairwise
from .losses import focal_neg, focal_pos, giou_loss, mutual_focal_loss, weighted_giou_loss

__all__ = ["MutualAssignResult", "iou_pairwise", "mutual_assign", "rank_within_groups",
           "focal_neg", "focal_pos", "giou_loss", "mutual_focal_loss", "weighted_giou_loss"]
