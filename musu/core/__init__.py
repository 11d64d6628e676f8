"""Framework-free MuSu math: the paper's equations as pure torch functions."""
from .assign import MutualAssignResult, box_iou_pairwise, mutual_assign, rank_within_groups
from .losses import focal_neg, focal_pos, giou_loss, mutual_focal_loss, weighted_giou_loss

__all__ = ["MutualAssignResult", "box_iou_pairwise", "mutual_assign", "rank_within_groups",
           "focal_neg", "focal_pos", "giou_loss", "mutual_focal_loss", "weighted_giou_loss"]
