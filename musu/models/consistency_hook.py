"""Head consistency measured at every evaluation (``musu.core.consistency``).

The mmdet glue: every anchor's final confidence and predicted box, before any
score threshold or NMS, for the two head families the paper compares (MuSu:
class sigmoid x implicit objectness; FCOS and FCOS++: class sigmoid x
centerness, as the paper's Figure 1 and FCOS's NMS use them), then pooled
over the validation set by an mmengine hook. Another head (a ``mmdet::``
reference row) is not measured and logs nothing.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from mmengine.hooks import Hook
from mmdet.models.dense_heads import FCOSHead

from musu.core.consistency import HeadConsistency, ObjectConsistency, image_consistency

from .musu_head import MuSuHead


def _flat(level: torch.Tensor, i: int, width: int) -> torch.Tensor:
    """Image ``i`` of a level's [B, width, H, W] map as [H*W, width], location-major."""
    return level[i].permute(1, 2, 0).reshape(-1, width)


def dense_predictions(head, feats) -> Optional[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Per image of the batch: (confidences [N, C], boxes [N, 4], points [N, 2]) over every
    anchor, in the network input's coordinates; None for a head of another kind."""
    if isinstance(head, MuSuHead):
        cls_scores, distances, objectness = head(feats)
        sizes = [s.shape[-2:] for s in cls_scores]
        points = torch.cat(head._points(sizes, distances[0].dtype, distances[0].device))
        cls, dist, obj = head._flatten(cls_scores, distances, objectness)
        return [(head.final_probs(cls[i], obj[i]), head._decode(points, dist[i]), points) for i in range(len(cls))]
    if isinstance(head, FCOSHead):
        cls_scores, bbox_preds, centernesses = head(feats)
        sizes = [s.shape[-2:] for s in cls_scores]
        priors = head.prior_generator.grid_priors(sizes, dtype=bbox_preds[0].dtype, device=bbox_preds[0].device)
        out = []
        for i in range(cls_scores[0].shape[0]):
            scores = torch.cat([_flat(c, i, head.cls_out_channels).sigmoid() * _flat(z, i, 1).sigmoid()
                                for c, z in zip(cls_scores, centernesses)])
            boxes = torch.cat([head.bbox_coder.decode(p[:, :2], _flat(b, i, 4)) for p, b in zip(priors, bbox_preds)])
            out.append((scores, boxes, torch.cat([p[:, :2] for p in priors])))
        return out
    return None


class HeadConsistencyHook(Hook):
    """After each validation: ``result`` holds the pooled ``HeadConsistency`` (all ranks'
    objects), and ``on_result(result, iteration)`` is called on rank 0 when given.

    It runs the detector's backbone and head once more on each validation batch, so
    an evaluation costs about one more forward pass per image."""

    priority = "LOW"

    def __init__(self, on_result: Optional[Callable[[HeadConsistency, int], None]] = None) -> None:
        self.on_result = on_result
        self.result: Optional[HeadConsistency] = None
        self._objects: list[ObjectConsistency] = []
        self._measurable = True

    def before_val_epoch(self, runner) -> None:
        self._objects = []

    @torch.no_grad()
    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self._measurable or data_batch is None:
            return
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        data = model.data_preprocessor(data_batch, False)
        per_image = dense_predictions(model.bbox_head, model.extract_feat(data["inputs"]))
        if per_image is None:
            self._measurable = False
            return
        from mmdet.structures.bbox import get_box_tensor
        for (scores, boxes, points), sample in zip(per_image, data["data_samples"]):
            gt = sample.gt_instances
            self._objects += image_consistency(scores, boxes, points, get_box_tensor(gt.bboxes), gt.labels)

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not self._measurable:
            return
        from mmengine.dist import all_gather_object, get_rank
        objects = [o for part in all_gather_object(self._objects) for o in part]
        self.result = HeadConsistency.pool(objects)
        if self.on_result is not None and get_rank() == 0:
            self.on_result(self.result, runner.iter)
