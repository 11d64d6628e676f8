"""Head consistency: how well the classification head's confidence ranks the
regression head's boxes, the property MuSu is built to improve (the paper's
Figure 1 and Appendix Figure 4 show it as maps of confidence and of IoU).

For each ground-truth object j, over the anchors whose points lie inside its
box (the anchors that could detect it):

1. ``spearman``: the rank correlation between each anchor's final confidence
   for j's class (what NMS keeps by) and the IoU of that anchor's predicted
   box with j. 1 when the most confident boxes are the best localised, as the
   paper asks of a converged detector; near 0 when confidence says nothing
   of localisation. Ties take their average rank.
2. ``top1``: whether the most confident anchor's box has the best IoU (ties in
   IoU count as agreement: the best box is kept).
3. ``iou_ratio``: the most confident box's IoU over the best IoU, 1 when NMS
   keeps the best box and lower the worse the box it keeps.

Each is averaged over **the same objects** (``HeadConsistency.pool``): those
where all three are defined, i.e. the correlation is (two or more anchors,
confidences and IoUs not all equal, so a best IoU above 0). An object with one
anchor, or whose boxes all miss it, would count as agreement for top-1 while
the correlation left it out, and the three means would describe different
objects. Top-1 and the ratio get harder as an object has more anchors to
choose from, so compare them between rows with the same anchors per location
(Table 5's #A changes that). Pure torch, no framework: the evaluation hook
feeds it one image's predictions at a time (the validation images; the
paper's Figure 1 shows a training image) and pools the per-object values.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .boxes import iou_pairwise


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 of a 1-D tensor, tied values sharing the mean of their ranks."""
    values, order = x.sort()
    _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    mean_rank = ends - (counts.to(torch.float64) + 1) / 2
    ranks = torch.empty(x.numel(), dtype=torch.float64, device=x.device)
    ranks[order] = mean_rank[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman's rho of two 1-D tensors; None when it is undefined (fewer than 2 values, or a constant)."""
    if a.numel() < 2:
        return None
    ra, rb = average_ranks(a) - (a.numel() - 1) / 2, average_ranks(b) - (b.numel() - 1) / 2
    denom = (ra.square().sum() * rb.square().sum()).sqrt()
    if denom <= 0:
        return None
    return float((ra * rb).sum() / denom)


@dataclass(frozen=True)
class ObjectConsistency:
    """The three measures for one ground-truth object (None where undefined)."""
    spearman: float | None
    top1: bool
    iou_ratio: float | None
    anchors: int


def object_consistency(confidence: torch.Tensor, ious: torch.Tensor) -> ObjectConsistency | None:
    """One object's measures from its anchors' confidences and IoUs (1-D, aligned); None without anchors."""
    if confidence.numel() == 0:
        return None
    top = int(confidence.argmax())
    best = float(ious.max())
    return ObjectConsistency(spearman(confidence, ious), bool(float(ious[top]) >= best),
                             float(ious[top]) / best if best > 0 else None, int(confidence.numel()))


def image_consistency(scores: torch.Tensor, boxes: torch.Tensor, points: torch.Tensor, gt_boxes: torch.Tensor,
                      gt_labels: torch.Tensor) -> list[ObjectConsistency]:
    """Per object of one image. ``scores`` [N, C]: each anchor's final confidence per class
    (for FCOS, classification x centerness, as its NMS uses them); ``boxes`` [N, 4] its
    predicted box; ``points`` [N, 2] its location; ``gt_boxes`` [M, 4], ``gt_labels`` [M]."""
    if len(gt_boxes) == 0 or len(boxes) == 0:
        return []
    ious = iou_pairwise(boxes, gt_boxes)  # [N, M]
    x, y = points[:, 0:1], points[:, 1:2]
    inside = (x >= gt_boxes[:, 0]) & (x <= gt_boxes[:, 2]) & (y >= gt_boxes[:, 1]) & (y <= gt_boxes[:, 3])  # [N, M]
    out = []
    for j in range(len(gt_boxes)):
        mask = inside[:, j]
        one = object_consistency(scores[mask, int(gt_labels[j])], ious[mask, j])
        if one is not None:
            out.append(one)
    return out


@dataclass(frozen=True)
class HeadConsistency:
    """Means over the objects where every measure is defined (module docstring); ``objects`` counts them."""
    spearman: float
    top1: float
    iou_ratio: float
    objects: int

    @classmethod
    def pool(cls, per_object: list[ObjectConsistency]) -> "HeadConsistency":
        measured = [o for o in per_object if o.spearman is not None and o.iou_ratio is not None]

        def mean(values: list[float]) -> float:
            return sum(values) / len(values) if values else float("nan")
        return cls(mean([o.spearman for o in measured]), mean([float(o.top1) for o in measured]),
                   mean([o.iou_ratio for o in measured]), len(measured))
