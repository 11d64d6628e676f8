"""The paper's equations on hand-worked cases, against a literal reading of
Procedure 1 on random inputs, and under gradient checks."""
import math

import pytest
import torch

from musu import mutual_assign, mutual_focal_loss, giou_loss, weighted_giou_loss

GT = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
LABELS = torch.tensor([0])
POINTS = torch.tensor([[5.0, 5.0], [5.0, 5.0], [2.0, 2.0], [8.0, 8.0], [15.0, 15.0]])
BOXES = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 5, 10], [0, 0, 10, 10], [12, 12, 18, 18]])
PROBS = torch.tensor([[0.5, 0.1], [0.9, 0.1], [0.1, 0.1], [0.2, 0.1], [0.9, 0.1]])


def _assign(**kw):
    return mutual_assign(PROBS, BOXES, POINTS, GT, LABELS, **kw)


def test_bag_threshold_and_membership():
    # P = p * IoU^4 = 0.5, 0.05625, 0.00625, 0.2; threshold 0.1 * 0.5 keeps anchors 0, 1, 3.
    r = _assign()
    assert r.gt_inds.tolist() == [0, 0, -1, 0, -1]
    assert r.bag_sizes.tolist() == [3]
    assert r.cls_weights[[2, 4]].tolist() == [0.0, 0.0]
    assert r.reg_weights[[2, 4]].tolist() == [0.0, 0.0]


def test_mutual_ranks_and_adaptive_tau():
    # v_cls = q p^(1/3): 0.794, 0.060, 0.585 -> ranks 0, 2, 1
    # v_reg = p q^(1/3): 0.5, 0.357, 0.2   -> ranks 0, 1, 2
    r = _assign()
    assert r.cls_ranks[[0, 1, 3]].tolist() == [0, 2, 1]
    assert r.reg_ranks[[0, 1, 3]].tolist() == [0, 1, 2]
    t = math.sqrt(3)
    exp_cls = [1.0, math.exp(-2 / t), math.exp(-1 / t)]
    exp_reg = [1.0, math.exp(-1 / (t / 2)), math.exp(-2 / (t / 2))]
    assert r.cls_weights[[0, 1, 3]].tolist() == pytest.approx(exp_cls, rel=1e-6)
    assert r.reg_weights[[0, 1, 3]].tolist() == pytest.approx(exp_reg, rel=1e-6)


def test_fixed_tau_and_ratio():
    r = _assign(tau_cls=5.0, tau_ratio=1.5)
    assert r.cls_weights[[0, 1, 3]].tolist() == pytest.approx([1.0, math.exp(-2 / 5), math.exp(-1 / 5)], rel=1e-6)
    t_reg = 5.0 / 1.5
    assert r.reg_weights[[0, 1, 3]].tolist() == pytest.approx([1.0, math.exp(-1 / t_reg), math.exp(-2 / t_reg)], rel=1e-6)


def test_hard_targets():
    # tau_cls = sqrt(3) = 1.73: ranks 0 and 1 pass; tau_reg = 0.87: rank 0 only.
    r = _assign(hard=True)
    assert r.cls_weights.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert r.reg_weights.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_single_criteria_and_ties():
    r = _assign(criteria="cls")  # v = p: 0.5, 0.9, 0.2
    assert r.cls_ranks[[0, 1, 3]].tolist() == [1, 0, 2]
    assert torch.equal(r.cls_ranks, r.reg_ranks)
    r = _assign(criteria="reg")  # v = q: 1, 0.0625, 1 -> the tie goes to the lower index
    assert r.cls_ranks[[0, 1, 3]].tolist() == [0, 2, 1]


def test_alpha_zero_and_one():
    r0 = _assign(alpha=0.0)  # v_cls = q, v_reg = p
    assert r0.cls_ranks[[0, 1, 3]].tolist() == [0, 2, 1]
    assert r0.reg_ranks[[0, 1, 3]].tolist() == [1, 0, 2]
    r1 = _assign(alpha=1.0)  # both p q
    assert torch.equal(r1.cls_ranks, r1.reg_ranks)


def test_overlapping_objects_take_highest_iou_and_strict_interior():
    gts = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [4.0, 4, 20, 20]])
    labels = torch.tensor([0, 1, 1])
    points = torch.tensor([[5.0, 5.0], [5.0, 5.0], [4.0, 5.0], [15.0, 15.0], [10.0, 5.0]])
    boxes = torch.tensor([[0.0, 0, 10, 10], [4.0, 4, 20, 20], [4.0, 4, 20, 20], [4.0, 4, 20, 20], [0.0, 0, 10, 10]])
    probs = torch.full((5, 2), 0.5)
    r = mutual_assign(probs, boxes, points, gts, labels)
    # anchor 0: IoU 1 with gts 0 and 1 (tie -> 0); anchors 1 and 3: gt 2.
    # Anchor 2 sits on gt 2's border and anchor 4 on gt 0's: with a strict
    # interior each belongs only to the other object, with a poor IoU, and
    # falls below the bag threshold; a non-strict test would bag both.
    assert r.gt_inds.tolist() == [0, 2, -1, 2, -1]
    assert r.bag_sizes.tolist() == [1, 0, 2]


def test_image_without_objects():
    r = mutual_assign(PROBS, BOXES, POINTS, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert (r.gt_inds == -1).all() and r.cls_weights.sum() == 0 and r.reg_weights.sum() == 0
    assert r.bag_sizes.numel() == 0
    loss = mutual_focal_loss(PROBS, r.gt_inds, r.cls_weights, torch.zeros(0, dtype=torch.long))
    assert (loss > 0).all()
    assert weighted_giou_loss(BOXES, r.gt_inds, r.reg_weights, torch.zeros(0, 4)).item() == 0.0


def test_several_anchors_per_point():
    # Two anchors share each of two points; every anchor is ranked on its own.
    points = torch.tensor([[5.0, 5.0]] * 2 + [[3.0, 3.0]] * 2)
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 1, 9, 9], [0.0, 0, 8, 8], [2.0, 2, 4, 4]])
    probs = torch.tensor([[0.3], [0.6], [0.5], [0.4]])
    r = mutual_assign(probs, boxes, points, GT, LABELS, alpha=1.0)
    ious = torch.tensor([1.0, 0.64, 0.64, 0.04])
    joint = probs[:, 0] * ious ** 4
    assert r.gt_inds.tolist() == [0 if v > 0.1 * joint.max() else -1 for v in joint]
    kept = r.gt_inds >= 0
    order = torch.argsort(-joint[kept], stable=True)
    assert r.cls_ranks[kept][order].tolist() == list(range(int(kept.sum())))


def _reference(cls_prob, boxes, points, gts, labels, alpha, b, theta, tau_cls, tau_ratio, hard, over="all"):
    """Procedure 1 read literally, with Python loops. Line 4, A_j: the anchor lies in j's box and
    j has its maximum IoU "across G" (``over="all"``, the default), or, the other reading, among
    the objects whose boxes contain its point (``"containing"``). Ties go to the lowest index."""
    from musu.core.boxes import iou_pairwise as box_iou_pairwise
    n, g = cls_prob.shape[0], gts.shape[0]
    ious = box_iou_pairwise(boxes, gts)
    owner = [-1] * n
    for i in range(n):
        x, y = points[i].tolist()
        holds = [j for j in range(g) if gts[j, 0] < x < gts[j, 2] and gts[j, 1] < y < gts[j, 3]]
        if not holds:
            continue
        among = range(g) if over == "all" else holds
        best = max(among, key=lambda j: (ious[i, j].item(), -j))
        owner[i] = best if best in holds else -1
    gt_inds, wc, wr = [-1] * n, [0.0] * n, [0.0] * n
    for j in range(g):
        a_j = [i for i in range(n) if owner[i] == j]
        if not a_j:
            continue
        p = {i: cls_prob[i, labels[j]].item() for i in a_j}
        q = {i: ious[i, j].item() ** theta for i in a_j}
        m = max(p[i] * q[i] for i in a_j)
        bag = [i for i in a_j if p[i] * q[i] > b * m]
        tc = math.sqrt(len(bag)) if tau_cls is None else tau_cls
        tr = tc / tau_ratio
        vc = {i: q[i] * p[i] ** alpha for i in bag}
        vr = {i: p[i] * q[i] ** alpha for i in bag}
        for v, t, out in ((vc, tc, wc), (vr, tr, wr)):
            for rank, i in enumerate(sorted(bag, key=lambda i: (-v[i], i))):
                out[i] = float(rank < t) if hard else math.exp(-rank / t)
        for i in bag:
            gt_inds[i] = j
    return gt_inds, wc, wr


@pytest.mark.parametrize("seed,hard,tau", [(0, False, None), (1, True, None), (2, False, 5.0), (3, False, None)])
def test_matches_literal_procedure(seed, hard, tau):
    g = torch.Generator().manual_seed(seed)
    n, ng, c = 300, 6, 4
    points = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 40 + 2
    boxes = torch.cat([points - wh / 2, points + wh / 2], 1)
    ctr = torch.rand(ng, 2, generator=g, dtype=torch.float64) * 100
    gwh = torch.rand(ng, 2, generator=g, dtype=torch.float64) * 50 + 10
    gts = torch.cat([ctr - gwh / 2, ctr + gwh / 2], 1)
    labels = torch.randint(0, c, (ng,), generator=g)
    probs = torch.rand(n, c, generator=g, dtype=torch.float64)
    for over in ("all", "containing"):  # the default (the paper's words) and the earlier reading
        r = mutual_assign(probs, boxes, points, gts, labels, hard=hard, tau_cls=tau,
                          **({} if over == "all" else {"bag_iou_over": over}))
        ref = _reference(probs, boxes, points, gts, labels, 1 / 3, 0.1, 4.0, tau, 2.0, hard, over)
        assert r.gt_inds.tolist() == ref[0], over
        assert r.cls_weights.tolist() == pytest.approx(ref[1], rel=1e-9, abs=1e-12)
        assert r.reg_weights.tolist() == pytest.approx(ref[2], rel=1e-9, abs=1e-12)
        assert (r.gt_inds >= 0).sum() > 10  # the case is not vacuous


def test_weights_carry_no_gradient():
    probs = PROBS.clone().requires_grad_(True)
    boxes = BOXES.clone().requires_grad_(True)
    r = mutual_assign(probs, boxes, POINTS, GT, LABELS)
    assert not r.cls_weights.requires_grad and not r.reg_weights.requires_grad


def _lpos(p, a=0.25, g=2.0):
    return -a * (1 - p) ** g * math.log(p)


def _lneg(p, a=0.25, g=2.0):
    return -(1 - a) * p ** g * math.log(1 - p)


def test_focal_loss_hand_worked():
    probs = torch.tensor([[0.6, 0.3], [0.2, 0.7]], dtype=torch.float64)
    gt_inds = torch.tensor([0, -1])
    w = torch.tensor([0.5, 0.0], dtype=torch.float64)
    loss = mutual_focal_loss(probs, gt_inds, w, torch.tensor([0]))
    exp0 = 0.5 * _lpos(0.6) + 0.5 ** 4 * _lneg(0.6) + _lneg(0.3)
    exp1 = _lneg(0.2) + _lneg(0.7)
    assert loss.tolist() == pytest.approx([exp0, exp1], rel=1e-12)
    # beta changes the penalty only; w = 1 removes it.
    loss_b2 = mutual_focal_loss(probs, gt_inds, w, torch.tensor([0]), beta=2.0)
    assert loss_b2[0].item() == pytest.approx(0.5 * _lpos(0.6) + 0.25 * _lneg(0.6) + _lneg(0.3))
    w1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert mutual_focal_loss(probs, gt_inds, w1, torch.tensor([0]))[0].item() == pytest.approx(_lpos(0.6) + _lneg(0.3))


def test_focal_loss_safe_at_bounds():
    probs = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    loss = mutual_focal_loss(probs, torch.tensor([0, 1]), torch.tensor([1.0, 0.3]), torch.tensor([0, 1]))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(probs.grad).all()


def test_gradients():
    g = torch.Generator().manual_seed(0)
    probs = (torch.rand(6, 3, generator=g, dtype=torch.float64) * 0.9 + 0.05).requires_grad_(True)
    gt_inds = torch.tensor([0, -1, 1, 0, -1, 1])
    w = torch.rand(6, generator=g, dtype=torch.float64)
    labels = torch.tensor([2, 0])
    assert torch.autograd.gradcheck(lambda p: mutual_focal_loss(p, gt_inds, w, labels), (probs,))
    pred = torch.tensor([[1.0, 2, 8, 9], [0.5, 0.5, 4, 6]], dtype=torch.float64, requires_grad=True)
    tgt = torch.tensor([[0.0, 0, 10, 10], [2, 1, 5, 5]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: giou_loss(x, tgt), (pred,))


def test_giou_values():
    a = torch.tensor([[0.0, 0, 2, 2], [0.0, 0, 1, 1]])
    b = torch.tensor([[0.0, 0, 2, 2], [2.0, 0, 3, 1]])
    # identical: 0; disjoint unit boxes 1 apart: IoU 0, enclose 3, union 2 -> 1 + 1/3
    assert giou_loss(a, b).tolist() == pytest.approx([0.0, 1 + 1 / 3])


def test_scales_to_paper_size():
    g = torch.Generator().manual_seed(0)
    n, ng = 60000, 100
    points = torch.rand(n, 2, generator=g) * 1000
    boxes = torch.cat([points - 30, points + 30], 1)
    ctr = torch.rand(ng, 2, generator=g) * 1000
    gts = torch.cat([ctr - 60, ctr + 60], 1)
    r = mutual_assign(torch.rand(n, 80, generator=g), boxes, points, gts, torch.randint(0, 80, (ng,), generator=g))
    assert int(r.bag_sizes.sum()) == int((r.gt_inds >= 0).sum()) > 0


def test_reading_bag_membership_among_containing_boxes_or_all_objects():
    """docs/readings.md, reading 1 (Procedure 1, line 4: 'maximum IoU with j across G')."""
    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0], [6.0, 0.0, 30.0, 10.0]])
    labels = torch.tensor([0, 0])
    points = torch.tensor([[3.0, 5.0]])                # inside object 0's box only
    boxes = torch.tensor([[6.0, 0.0, 28.0, 10.0]])     # yet its box is almost object 1's
    probs = torch.tensor([[0.9]])
    containing = mutual_assign(probs, boxes, points, gts, labels, bag_iou_over="containing")
    assert containing.gt_inds.tolist() == [0]          # the best of the boxes containing its point
    across_all = mutual_assign(probs, boxes, points, gts, labels)  # the default: the paper's "across G"
    assert across_all.gt_inds.tolist() == [-1]         # its best object (1) does not contain its point
    # where the two readings agree, they assign alike
    same = mutual_assign(PROBS, BOXES, POINTS, GT, LABELS, bag_iou_over="containing")
    assert torch.equal(same.gt_inds, _assign().gt_inds) and torch.allclose(same.cls_weights, _assign().cls_weights)


def test_reading_same_weights_for_each_head_is_tau_ratio_one():
    """docs/readings.md, reading 3: Table 1's v = p rows 'assign the same weights for each
    head' only with tau_ratio 1 (which the suite's v = p and v = q rows set); the 2:1 of every
    other row gives the regression head sharper weights."""
    r1 = _assign(criteria="cls", tau_ratio=1.0)
    assert torch.equal(r1.cls_weights, r1.reg_weights)
    r2 = _assign(criteria="cls")
    assert not torch.equal(r2.cls_weights, r2.reg_weights) and torch.equal(r2.cls_ranks, r2.reg_ranks)
