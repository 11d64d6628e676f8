"""Issue 13, item 1: the head-consistency measures on hand-made predictions whose answers are known."""
from __future__ import annotations

import math

import pytest
import torch

from musu.core.consistency import HeadConsistency, image_consistency, object_consistency, spearman


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        a = torch.randint(0, 5, (30,), generator=g).float()   # many ties, as IoU 0 gives
        b = a + torch.randint(0, 3, (30,), generator=g).float()
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-9)
    assert spearman(torch.tensor([1.0]), torch.tensor([2.0])) is None
    assert spearman(torch.tensor([1.0, 1.0]), torch.tensor([0.2, 0.5])) is None  # constant confidence


def test_a_confidence_that_ranks_boxes_by_iou_is_consistent_and_the_reverse_is_not():
    ious = torch.tensor([0.9, 0.7, 0.5, 0.2])
    same = object_consistency(torch.tensor([0.8, 0.6, 0.3, 0.1]), ious)
    assert (same.spearman, same.top1, same.iou_ratio) == (pytest.approx(1.0), True, pytest.approx(1.0))
    reverse = object_consistency(torch.tensor([0.1, 0.3, 0.6, 0.8]), ious)
    assert (reverse.spearman, reverse.top1, reverse.iou_ratio) == (pytest.approx(-1.0), False,
                                                                   pytest.approx(0.2 / 0.9))
    # Figure 1's failure: the most confident anchor is not the best box, the rest agree
    off = object_consistency(torch.tensor([0.7, 0.6, 0.8, 0.1]), ious)
    assert off.top1 is False and off.iou_ratio == pytest.approx(0.5 / 0.9) and 0 < off.spearman < 1


def test_an_image_counts_only_the_anchors_inside_each_box_and_its_class():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    labels = torch.tensor([0, 1])
    points = torch.tensor([[2.0, 2.0], [5.0, 5.0], [8.0, 8.0], [25.0, 25.0], [50.0, 50.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0],    # IoU 1 with object 0
                          [0.0, 0.0, 5.0, 10.0],     # IoU 0.5
                          [0.0, 0.0, 10.0, 2.5],     # IoU 0.25
                          [20.0, 20.0, 30.0, 30.0],  # object 1's only anchor
                          [0.0, 0.0, 10.0, 10.0]])   # outside both: ignored although its box is perfect
    scores = torch.tensor([[0.9, 0.0], [0.5, 0.0], [0.2, 0.0], [0.0, 0.7], [1.0, 1.0]])
    first, second = image_consistency(scores, boxes, points, gt, labels)
    assert (first.anchors, first.spearman, first.top1, first.iou_ratio) == (3, pytest.approx(1.0), True, 1.0)
    assert (second.anchors, second.spearman, second.top1) == (1, None, True)
    # the three means are over the same objects: object 1 (one anchor: no correlation) is in none of them,
    # though alone it would count as top-1 agreement (issue 25)
    off = object_consistency(torch.tensor([0.1, 0.8, 0.3]), torch.tensor([0.9, 0.45, 0.2]))
    pooled = HeadConsistency.pool([first, second, off])
    assert pooled == HeadConsistency(pytest.approx((1.0 + off.spearman) / 2), 0.5, pytest.approx((1 + 0.5) / 2), 2)
    # an object whose boxes all miss it (IoU 0 everywhere): no correlation, in no mean
    missed = object_consistency(torch.tensor([0.9, 0.1]), torch.tensor([0.0, 0.0]))
    assert missed.top1 is True and HeadConsistency.pool([first, missed]).objects == 1
    # scoring the wrong class: object 0's anchors read class 1, all zero: no correlation, no agreement claimed
    (wrong, _) = image_consistency(scores[:, [1, 0]], boxes, points, gt, labels)
    assert wrong.spearman is None and wrong.top1 is True  # argmax of equal scores is the first anchor (IoU 1)
    assert HeadConsistency.pool([wrong, second]).objects == 0
    assert math.isnan(HeadConsistency.pool([]).spearman)


def test_validation_boxes_are_taken_to_the_network_inputs_pixels():
    """mmdet's test pipelines load boxes after the resize: in original pixels. Seen in the
    first maps drawn: the object's box sat at half its place on a 2x resized image."""
    pytest.importorskip("mmdet")
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from musu.models.consistency_hook import ground_truth_in_input
    sample = DetDataSample(metainfo=dict(scale_factor=(2.0, 1.5)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[43.0, 64.0, 84.0, 107.0]]), labels=torch.tensor([0]))
    boxes, labels = ground_truth_in_input(sample)
    assert boxes.tolist() == [[86.0, 96.0, 168.0, 160.5]] and labels.tolist() == [0]
