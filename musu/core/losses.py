"""The split focal loss of Eq. 7 and the weighted GIoU loss of Eq. 5.

The focal loss works on the *final* probability (class sigmoid times implicit
objectness sigmoid), which is what MuSu ranks and what NMS sees; it therefore
takes probabilities, not logits, and guards both logs against 0 and 1.
"""
from __future__ import annotations

import torch

from .boxes import area, intersection

_EPS = 1e-12


def focal_pos(p: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """l+(p) = -alpha (1-p)^gamma log p."""
    return -alpha * (1.0 - p).pow(gamma) * torch.log(p.clamp(min=_EPS))


def focal_neg(p: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """l-(p) = -(1-alpha) p^gamma log(1-p)."""
    return -(1.0 - alpha) * p.pow(gamma) * torch.log((1.0 - p).clamp(min=_EPS))


def mutual_focal_loss(
    cls_prob: torch.Tensor,
    gt_inds: torch.Tensor,
    cls_weights: torch.Tensor,
    gt_labels: torch.Tensor,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    beta: float = 4.0,
) -> torch.Tensor:
    """Per-anchor loss [N] of Eq. 7 before normalisation.

    In the bag of an object of class c: w l+(p_c) + (1-w)^beta l-(p_c) plus the
    background term l-(p_k) for every k != c; elsewhere the background term over
    all classes.
    """
    cls_prob = cls_prob.clamp(0.0, 1.0)
    loss = focal_neg(cls_prob, alpha, gamma).sum(dim=1)
    pos = (gt_inds >= 0).nonzero(as_tuple=True)[0]
    if pos.numel() == 0:
        return loss
    labels = gt_labels.long()[gt_inds[pos]]
    p_c = cls_prob[pos, labels]
    w = cls_weights[pos].detach().to(cls_prob.dtype)
    # Replace the assigned class's background term by the soft-target pair.
    extra = w * focal_pos(p_c, alpha, gamma) + ((1.0 - w).pow(beta) - 1.0) * focal_neg(p_c, alpha, gamma)
    return loss.index_add(0, pos, extra)


def giou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per-box 1 - GIoU [M] for aligned x1y1x2y2 boxes."""
    inter = intersection(pred, target)
    union = (area(pred) + area(target) - inter).clamp(min=eps)
    iou = inter / union
    elt = torch.minimum(pred[:, :2], target[:, :2])
    erb = torch.maximum(pred[:, 2:], target[:, 2:])
    ewh = (erb - elt).clamp(min=0)
    enclose = (ewh[:, 0] * ewh[:, 1]).clamp(min=eps)
    return 1.0 - (iou - (enclose - union) / enclose)


def weighted_giou_loss(pred_boxes: torch.Tensor, gt_inds: torch.Tensor, reg_weights: torch.Tensor,
                       gt_boxes: torch.Tensor) -> torch.Tensor:
    """Sum over anchors of w_reg * GIoU loss (the numerator of Eq. 5)."""
    pos = (reg_weights > 0).nonzero(as_tuple=True)[0]
    if pos.numel() == 0:
        return pred_boxes.sum() * 0.0
    target = gt_boxes[gt_inds[pos]].to(pred_boxes.dtype)
    return (reg_weights[pos].detach() * giou_loss(pred_boxes[pos], target)).sum()
