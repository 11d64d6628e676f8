"""MuSuHead: FCOS's head trained by mutual supervision (Sections 3 and 4.1).

Subclasses mmdet's FCOSHead to keep its GN towers, per-level ``Scale``s, DCN on
the last tower conv and its registry plumbing. What changes:
  * the centerness conv becomes implicit objectness, multiplied into the class
    probability (training and inference alike);
  * distances are ``stride * exp(scale * raw)`` with a zero-initialised last
    regression conv, so every location starts as a 2s x 2s box;
  * #A anchors per location, their initial scale/aspect ratio in the bias;
  * targets come from ``musu.mutual_assign`` and the losses are Eq. 7 and the
    w_reg-weighted GIoU loss, each normalised by its weight sum (Eq. 5).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmdet.models.dense_heads import FCOSHead
from mmdet.models.utils import filter_scores_and_topk
from mmdet.registry import MODELS
from mmdet.utils import reduce_mean
from mmengine.structures import InstanceData
from torch import Tensor

from ..core import mutual_assign, mutual_focal_loss, weighted_giou_loss
from ..core.switches import Switches
MAX_LOG_DISTANCE = math.log(1e4)  # keeps exp() finite early in training


def initial_anchor_biases(num_anchors: int, seed: int) -> Tensor:
    """Biases [A, 4] (log l, t, r, b in stride units) of the #A initial anchors.

    #A = 1 is the paper's 2s x 2s box (all zeros). For more anchors, scale k
    ~ U[1, 2] and aspect ratio r = h/w ~ U[1/2, 2] (Section 4.2), seeded so a
    config always builds the same anchors.
    """
    if num_anchors == 1:
        return torch.zeros(1, 4)
    g = torch.Generator().manual_seed(seed)
    k = torch.empty(num_anchors).uniform_(1.0, 2.0, generator=g)
    r = torch.empty(num_anchors).uniform_(0.5, 2.0, generator=g)
    half_w, half_h = k / r.sqrt(), k * r.sqrt()
    return torch.stack([half_w, half_h, half_w, half_h], 1).log()


@MODELS.register_module()
class MuSuHead(FCOSHead):
    """FCOS-style dense head with implicit objectness and mutual supervision.

    Args beyond FCOSHead's: ``assigner`` (``Switches.ASSIGNER``: alpha, b,
    theta, criteria, tau_cls, tau_ratio, hard, bag_iou_over) and the head's
    own switches (``Switches.head_fields()``: ``num_anchors`` (#A), ``beta``,
    Eq. 7's penalty exponent, and ``normalizer``), whose defaults and checks
    are ``musu.core.switches.Switches``;
    ``anchor_seed``. Eq. 7's focal alpha/gamma and both loss weights are read
    from ``loss_cls`` and ``loss_bbox``.
    """

    def __init__(self, num_classes: int, in_channels: int, *, assigner: Optional[dict] = None,
                 anchor_seed: int = 0, centerness_on_reg: bool = True, loss_cls: Optional[dict] = None,
                 loss_bbox: Optional[dict] = None, **kwargs) -> None:
        unknown = set(assigner or {}) - set(Switches.ASSIGNER)
        if unknown:
            raise ValueError(f"unknown MuSu assigner fields {sorted(unknown)}; known: {sorted(Switches.ASSIGNER)}")
        # the head's own switches (#A, beta, the normaliser): given, or their defaults
        head = {k: kwargs.pop(k) for k in Switches.head_fields() if k in kwargs}
        self.switches = Switches(**dict(assigner or {}), **{k: v for k, v in head.items() if v is not None})
        self.num_anchors, self.beta = self.switches.num_anchors, self.switches.beta
        # Eq. 7 is a focal loss and the regression loss a GIoU: their settings
        # are read from loss_cls / loss_bbox, so editing them there takes effect.
        loss_cls = dict(loss_cls or dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0))
        loss_bbox = dict(loss_bbox or dict(type="GIoULoss", loss_weight=1.0))
        if loss_cls.get("type") != "FocalLoss" or loss_bbox.get("type") != "GIoULoss":
            raise ValueError("MuSu trains Eq. 7 (a focal loss) and GIoU: loss_cls must be a FocalLoss and loss_bbox "
                             f"a GIoULoss, got {loss_cls.get('type')} and {loss_bbox.get('type')}")
        self.focal_alpha, self.focal_gamma = loss_cls.get("alpha", 0.25), loss_cls.get("gamma", 2.0)
        self.loss_cls_weight, self.loss_bbox_weight = loss_cls.get("loss_weight", 1.0), loss_bbox.get("loss_weight", 1.0)
        self.anchor_seed = anchor_seed
        super().__init__(num_classes, in_channels, centerness_on_reg=centerness_on_reg, loss_cls=loss_cls,
                         loss_bbox=loss_bbox, **kwargs)

    def _init_predictor(self) -> None:
        a = self.num_anchors
        self.conv_cls = nn.Conv2d(self.feat_channels, self.cls_out_channels * a, 3, padding=1)
        self.conv_reg = nn.Conv2d(self.feat_channels, 4 * a, 3, padding=1)

    def _init_layers(self) -> None:
        super()._init_layers()
        # FCOS's centerness conv, redirected to implicit objectness (one per anchor).
        self.conv_centerness = nn.Conv2d(self.feat_channels, self.num_anchors, 3, padding=1)

    def init_weights(self) -> None:
        super().init_weights()
        nn.init.zeros_(self.conv_reg.weight)
        with torch.no_grad():
            self.conv_reg.bias.copy_(initial_anchor_biases(self.num_anchors, self.anchor_seed).flatten())
        nn.init.normal_(self.conv_centerness.weight, std=0.01)
        nn.init.zeros_(self.conv_centerness.bias)

    def forward_single(self, x: Tensor, scale: nn.Module, stride: int) -> Tuple[Tensor, Tensor, Tensor]:
        """Class logits [B, A*C, H, W], distances in pixels [B, A*4, H, W], objectness logits [B, A, H, W]."""
        cls_feat, reg_feat = x, x
        for layer in self.cls_convs:
            cls_feat = layer(cls_feat)
        for layer in self.reg_convs:
            reg_feat = layer(reg_feat)
        cls_score = self.conv_cls(cls_feat)
        objectness = self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat)
        raw = scale(self.conv_reg(reg_feat)).float()
        distances = raw.clamp(max=MAX_LOG_DISTANCE).exp() * stride
        return cls_score, distances, objectness

    # ---- flattening: level-major, then location, then anchor ------------------------------
    def _flatten(self, cls_scores: List[Tensor], distances: List[Tensor], objectness: List[Tensor]):
        b, c = cls_scores[0].shape[0], self.cls_out_channels
        cls = torch.cat([s.permute(0, 2, 3, 1).reshape(b, -1, c) for s in cls_scores], 1)
        dist = torch.cat([d.permute(0, 2, 3, 1).reshape(b, -1, 4) for d in distances], 1)
        obj = torch.cat([o.permute(0, 2, 3, 1).reshape(b, -1) for o in objectness], 1)
        return cls, dist, obj

    def _points(self, featmap_sizes, dtype, device) -> List[Tensor]:
        points = self.prior_generator.grid_priors(featmap_sizes, dtype=dtype, device=device)
        return [p.repeat_interleave(self.num_anchors, 0) for p in points]

    @staticmethod
    def _decode(points: Tensor, dist: Tensor) -> Tensor:
        return torch.cat([points - dist[..., :2], points + dist[..., 2:]], -1)

    def final_probs(self, cls_logits: Tensor, obj_logits: Tensor) -> Tensor:
        """Class sigmoid times implicit-objectness sigmoid: what MuSu ranks and NMS sees."""
        return cls_logits.sigmoid() * obj_logits.sigmoid().unsqueeze(-1)

    def loss_by_feat(self, cls_scores: List[Tensor], bbox_preds: List[Tensor], centernesses: List[Tensor],
                     batch_gt_instances, batch_img_metas, batch_gt_instances_ignore=None) -> Dict[str, Tensor]:
        featmap_sizes = [s.shape[-2:] for s in cls_scores]
        points = torch.cat(self._points(featmap_sizes, bbox_preds[0].dtype, bbox_preds[0].device))
        cls, dist, obj = self._flatten(cls_scores, bbox_preds, centernesses)
        cls_terms, reg_terms, w_cls, w_reg, bag_total = [], [], [], [], 0
        for i, gt in enumerate(batch_gt_instances):
            probs = self.final_probs(cls[i], obj[i])
            boxes = self._decode(points, dist[i])
            res = mutual_assign(probs, boxes, points, gt.bboxes, gt.labels, self.switches)
            cls_terms.append(mutual_focal_loss(probs, res.gt_inds, res.cls_weights, gt.labels,
                                               alpha=self.focal_alpha, gamma=self.focal_gamma, beta=self.beta).sum())
            reg_terms.append(weighted_giou_loss(boxes, res.gt_inds, res.reg_weights, gt.bboxes))
            w_cls.append(res.cls_weights.sum())
            w_reg.append(res.reg_weights.sum())
            bag_total += int(res.bag_sizes.sum())
        if self.switches.normalizer == "image":
            # each image's loss over its own total weight (Eq. 5 read per image), averaged over images
            loss_cls = torch.stack([c / w.clamp(min=1.0) for c, w in zip(cls_terms, w_cls)]).mean()
            loss_bbox = torch.stack([r / w.clamp(min=1.0) for r, w in zip(reg_terms, w_reg)]).mean()
        else:
            # the batch's summed loss over the batch's total weight, averaged over GPUs (mmdet's convention)
            loss_cls = torch.stack(cls_terms).sum() / reduce_mean(torch.stack(w_cls).sum()).clamp(min=1.0)
            loss_bbox = torch.stack(reg_terms).sum() / reduce_mean(torch.stack(w_reg).sum()).clamp(min=1.0)
        return dict(loss_cls=self.loss_cls_weight * loss_cls,
                    loss_bbox=self.loss_bbox_weight * loss_bbox,
                    # logged, not optimised: mmengine sums only keys containing 'loss'
                    bag_size=cls.new_tensor(bag_total / max(len(batch_gt_instances), 1)))

    def predict_by_feat(self, cls_scores: List[Tensor], bbox_preds: List[Tensor],
                        score_factors: Optional[List[Tensor]] = None, batch_img_metas: Optional[List[dict]] = None,
                        cfg=None, rescale: bool = False, with_nms: bool = True) -> List[InstanceData]:
        cfg = self.test_cfg if cfg is None else cfg
        featmap_sizes = [s.shape[-2:] for s in cls_scores]
        level_points = self._points(featmap_sizes, bbox_preds[0].dtype, bbox_preds[0].device)
        results = []
        for i, meta in enumerate(batch_img_metas):
            boxes_l, scores_l, labels_l = [], [], []
            for cls_s, dist_s, obj_s, pts in zip(cls_scores, bbox_preds, score_factors, level_points):
                cls, dist, obj = self._flatten([cls_s[i:i + 1]], [dist_s[i:i + 1]], [obj_s[i:i + 1]])
                probs = self.final_probs(cls[0], obj[0])
                scores, labels, _, kept = filter_scores_and_topk(
                    probs, cfg.get("score_thr", 0.05), cfg.get("nms_pre", -1), dict(dist=dist[0], points=pts))
                boxes = self._decode(kept["points"], kept["dist"])
                h, w = meta["img_shape"][:2]
                boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
                boxes_l.append(boxes)
                scores_l.append(scores)
                labels_l.append(labels)
            res = InstanceData(bboxes=torch.cat(boxes_l), scores=torch.cat(scores_l), labels=torch.cat(labels_l))
            results.append(self._bbox_post_process(res, cfg, rescale=rescale, with_nms=with_nms, img_meta=meta))
        return results
