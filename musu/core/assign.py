"""Mutual assignment of Section 3 (Eqs. 1-4, 6), as a pure torch function.

Kept free of mmdet so the paper's equations can be tested on hand-worked cases
and benchmarked on their own; the head in ``musu.models`` only feeds it tensors.
Everything is vectorised over anchors and objects: one image with 100 objects
and 60k anchors is a handful of [N, G] tensor operations and one sort.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .boxes import iou_aligned, iou_pairwise
from .switches import Switches

DEFAULTS = Switches()


@dataclass
class MutualAssignResult:
    """Per-anchor targets of one image.

    ``gt_inds[i]`` is the object whose candidate bag holds anchor i (-1: none);
    ``cls_weights``/``reg_weights`` are Eq. 4's w (0 outside every bag);
    ``bag_sizes[j]`` is |C_j|; ``cls_ranks``/``reg_ranks`` are the mutual
    ranks of Eq. 3's criteria (Procedure 1, line 9; -1 outside bags).
    """

    gt_inds: torch.Tensor
    cls_weights: torch.Tensor
    reg_weights: torch.Tensor
    bag_sizes: torch.Tensor
    cls_ranks: torch.Tensor
    reg_ranks: torch.Tensor


def rank_within_groups(group: torch.Tensor, values: torch.Tensor, num_groups: int) -> torch.Tensor:
    """0-based rank of each element by descending value inside its group.

    Ties keep the lower index first. ``group`` holds values in [0, num_groups);
    the result is aligned with the inputs. Two stable sorts, no Python loop.
    """
    order = torch.sort(values, descending=True, stable=True).indices
    order = order[torch.sort(group[order], stable=True).indices]
    sizes = torch.bincount(group, minlength=num_groups)
    starts = torch.cumsum(sizes, 0) - sizes
    ranks = torch.empty_like(group)
    ranks[order] = torch.arange(group.numel(), device=group.device) - starts[group[order]]
    return ranks


def ranks_to_weights(ranks: torch.Tensor, tau: torch.Tensor, hard: bool) -> torch.Tensor:
    """Eq. 4 (soft) or the indicator 1[R < tau] of the soft-vs-hard study."""
    ranks = ranks.to(tau.dtype)
    if hard:
        return (ranks < tau).to(tau.dtype)
    return torch.exp(-ranks / tau)


@torch.no_grad()
def mutual_assign(
    cls_prob: torch.Tensor,
    pred_boxes: torch.Tensor,
    points: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    switches: Switches | None = None,
    **overrides,
) -> MutualAssignResult:
    """Candidate bags, mutual rankings and loss weights for one image.

    ``cls_prob`` [N, C] is the final classification probability, ``pred_boxes``
    [N, 4] the decoded boxes, ``points`` [N, 2] the anchor locations, ``gt_boxes``
    [G, 4] and ``gt_labels`` [G] the objects; ``switches`` (or single fields
    of it as keywords, ``alpha=1.0``) the paper's settings. The steps follow Section 3:
    bags (Eq. 1-2), mutual ranks (Eq. 3), weights (Eq. 4, temperatures Eq. 6); the weights carry
    no gradient.
    """
    sw = replace(switches or DEFAULTS, **overrides) if overrides else (switches or DEFAULTS)  # checks them
    alpha, b, theta, criteria, tau_cls, tau_ratio, hard = (sw.alpha, sw.b, sw.theta, sw.criteria, sw.tau_cls,
                                                           sw.tau_ratio, sw.hard)
    cls_prob = cls_prob.detach()
    pred_boxes = pred_boxes.detach()
    n, g = cls_prob.shape[0], gt_boxes.shape[0]
    device, dtype = cls_prob.device, cls_prob.dtype
    gt_inds = torch.full((n,), -1, dtype=torch.long, device=device)
    zeros = torch.zeros(n, dtype=dtype, device=device)
    if g == 0 or n == 0:
        return MutualAssignResult(gt_inds, zeros, zeros.clone(), torch.zeros(g, dtype=torch.long, device=device),
                                  gt_inds.clone(), gt_inds.clone())

    gt_boxes = gt_boxes.to(dtype)
    x, y = points[:, 0:1], points[:, 1:2]
    inside = (x > gt_boxes[None, :, 0]) & (x < gt_boxes[None, :, 2]) & \
             (y > gt_boxes[None, :, 1]) & (y < gt_boxes[None, :, 3])
    # IoU only for (anchor, object) pairs whose box contains the point: a few
    # per anchor, instead of the full [N, G] matrix.
    pair_i, pair_j = inside.nonzero(as_tuple=True)
    if sw.bag_iou_over == "containing":
        pair_iou = iou_aligned(pred_boxes[pair_i], gt_boxes[pair_j])
        # A_j: the object of highest IoU among the boxes containing the point;
        # ties go to the lowest object index.
        best_iou = torch.full((n,), -1.0, dtype=dtype, device=device).scatter_reduce(0, pair_i, pair_iou,
                                                                                      reduce="amax")
        is_best = pair_iou == best_iou[pair_i]
        best_gt = torch.full((n,), g, dtype=torch.long, device=device).scatter_reduce(
            0, pair_i[is_best], pair_j[is_best], reduce="amin")
    else:
        # A_j read "across G" as all objects: the anchor's highest IoU over every object
        # (ties: the lowest index) must be j's, and its point must lie in j's box.
        anchors = pair_i.unique()
        top_iou, top_gt = iou_pairwise(pred_boxes[anchors], gt_boxes).max(1)
        ok = inside[anchors, top_gt]
        best_iou = torch.full((n,), -1.0, dtype=dtype, device=device)
        best_gt = torch.full((n,), g, dtype=torch.long, device=device)
        best_iou[anchors[ok]], best_gt[anchors[ok]] = top_iou[ok], top_gt[ok]
    in_some_box = best_gt < g
    cand = in_some_box.nonzero(as_tuple=True)[0]
    j = best_gt[cand]
    iou = best_iou[cand].clamp(min=0)
    p = cls_prob[cand, gt_labels[j].long()]
    q = iou.pow(theta)
    joint = p * q  # Eq. 1
    max_joint = torch.zeros(g, dtype=dtype, device=device).scatter_reduce(0, j, joint, reduce="amax")
    keep = joint > b * max_joint[j]  # Eq. 2
    cand, j, p, q = cand[keep], j[keep], p[keep], q[keep]

    if criteria == "mutual":  # Eq. 3
        v_cls, v_reg = q * p.pow(alpha), p * q.pow(alpha)
    elif criteria == "cls":
        v_cls = v_reg = p
    else:
        v_cls = v_reg = q
    bag_sizes = torch.bincount(j, minlength=g)
    r_cls = rank_within_groups(j, v_cls, g)
    r_reg = rank_within_groups(j, v_reg, g)
    if tau_cls is None:  # Eq. 6
        t_cls = bag_sizes.to(dtype).sqrt()[j]
    else:
        t_cls = torch.full_like(p, float(tau_cls))
    t_reg = t_cls / tau_ratio

    gt_inds[cand] = j
    cls_w, reg_w = zeros.clone(), zeros.clone()
    cls_w[cand] = ranks_to_weights(r_cls, t_cls, hard)
    reg_w[cand] = ranks_to_weights(r_reg, t_reg, hard)
    cls_ranks, reg_ranks = gt_inds.new_full((n,), -1), gt_inds.new_full((n,), -1)
    cls_ranks[cand], reg_ranks[cand] = r_cls, r_reg
    return MutualAssignResult(gt_inds, cls_w, reg_w, bag_sizes, cls_ranks, reg_ranks)
