"""Box geometry (x1y1x2y2) shared by the assignment and the GIoU loss: one
definition of area and overlap, so the IoU that ranks anchors and the IoU the
loss trains are the same number."""
from __future__ import annotations

import torch


def area(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] -> [...]; a box with negative width or height has area 0."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Overlap area of boxes that broadcast against each other (a[k] with b[k],
    or a[:, None] with b[None] for every pair)."""
    wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def iou_aligned(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """IoU of a[k] with b[k], [K]."""
    inter = intersection(a, b)
    return inter / (area(a) + area(b) - inter).clamp(min=eps)


def iou_pairwise(boxes: torch.Tensor, gts: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """IoU of every box with every ground truth, [N, G]."""
    return iou_aligned(boxes[:, None, :], gts[None, :, :], eps)
