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

from musu.core.boxes import area, iou_pairwise
from musu.core.consistency import HeadConsistency, ObjectConsistency, image_consistency

from .musu_head import MuSuHead


def _flat(level: torch.Tensor, i: int, width: int) -> torch.Tensor:
    """Image ``i`` of a level's [B, width, H, W] map as [H*W, width], location-major."""
    return level[i].permute(1, 2, 0).reshape(-1, width)


def dense_predictions(head, feats):
    """(per image of the batch: (confidences [N, C], boxes [N, 4], points [N, 2]) over every
    anchor, in the network input's coordinates; each level's (H, W) and anchors per
    location), or None for a head of another kind."""
    if isinstance(head, MuSuHead):
        cls_scores, distances, objectness = head(feats)
        sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        points = torch.cat(head._points(sizes, distances[0].dtype, distances[0].device))
        cls, dist, obj = head._flatten(cls_scores, distances, objectness)
        return [(head.final_probs(cls[i], obj[i]), head._decode(points, dist[i]), points)
                for i in range(len(cls))], sizes, head.num_anchors
    if isinstance(head, FCOSHead):
        cls_scores, bbox_preds, centernesses = head(feats)
        sizes = [tuple(s.shape[-2:]) for s in cls_scores]
        priors = head.prior_generator.grid_priors(sizes, dtype=bbox_preds[0].dtype, device=bbox_preds[0].device)
        out = []
        for i in range(cls_scores[0].shape[0]):
            scores = torch.cat([_flat(c, i, head.cls_out_channels).sigmoid() * _flat(z, i, 1).sigmoid()
                                for c, z in zip(cls_scores, centernesses)])
            boxes = torch.cat([head.bbox_coder.decode(p[:, :2], _flat(b, i, 4)) for p, b in zip(priors, bbox_preds)])
            out.append((scores, boxes, torch.cat([p[:, :2] for p in priors])))
        return out, sizes, 1
    return None


def ground_truth_in_input(sample) -> tuple[torch.Tensor, torch.Tensor]:
    """A validation sample's boxes and labels in the network input's pixels. mmdet's test
    pipelines load the boxes after resizing the image, so they are in the original image's
    pixels (for the evaluation), while the predictions are in the resized input's."""
    from mmdet.structures.bbox import get_box_tensor
    boxes = get_box_tensor(sample.gt_instances.bboxes)
    sx, sy = sample.metainfo.get("scale_factor", (1.0, 1.0))
    return boxes * boxes.new_tensor([sx, sy, sx, sy]), sample.gt_instances.labels


def object_maps(scores, boxes, gt_box, gt_label: int, sizes, anchors: int, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Figure 1's two maps for one object, at the input's resolution: at each pixel, the highest
    confidence for the object's class, and the highest IoU with it, over the anchors of every
    pyramid level at that place (each level's map upsampled to the input size)."""
    conf = scores[:, gt_label]
    ious = iou_pairwise(boxes, gt_box[None])[:, 0]
    maps_c, maps_i, start = [], [], 0
    for h, w in sizes:
        n = h * w * anchors
        for values, out in ((conf[start:start + n], maps_c), (ious[start:start + n], maps_i)):
            level = values.reshape(h, w, anchors).amax(-1)[None, None]
            out.append(torch.nn.functional.interpolate(level, size=shape, mode="nearest")[0, 0])
        start += n
    return torch.stack(maps_c).amax(0), torch.stack(maps_i).amax(0)


class HeadConsistencyHook(Hook):
    """After each validation: ``result`` holds the pooled ``HeadConsistency`` (all ranks'
    objects), and ``on_result(result, iteration)`` is called on rank 0 when given. With
    ``maps_path``, rank 0 also draws Figure 1 there for its first ``map_images`` validation
    images (each image's largest object: the image, the confidence map, the IoU map).

    It runs the detector's backbone and head once more on each validation batch, so
    an evaluation costs about one more forward pass per image."""

    priority = "LOW"

    def __init__(self, on_result: Optional[Callable[[HeadConsistency, int], None]] = None,
                 maps_path: Optional[str] = None, map_images: int = 2) -> None:
        self.on_result, self.maps_path, self.map_images = on_result, maps_path, map_images
        self.result: Optional[HeadConsistency] = None
        self._objects: list[ObjectConsistency] = []
        self._maps: list[tuple] = []
        self._measurable = True

    def before_val_epoch(self, runner) -> None:
        self._objects, self._maps = [], []

    @torch.no_grad()
    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self._measurable or data_batch is None:
            return
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        data = model.data_preprocessor(data_batch, False)
        dense = dense_predictions(model.bbox_head, model.extract_feat(data["inputs"]))
        if dense is None:
            self._measurable = False
            return
        per_image, sizes, anchors = dense
        for k, ((scores, boxes, points), sample) in enumerate(zip(per_image, data["data_samples"])):
            gt_boxes, gt_labels = ground_truth_in_input(sample)
            self._objects += image_consistency(scores, boxes, points, gt_boxes, gt_labels)
            if self.maps_path and len(self._maps) < self.map_images and len(gt_boxes):
                j = int(area(gt_boxes).argmax())
                shape = tuple(data["inputs"].shape[-2:])
                conf, iou = object_maps(scores, boxes, gt_boxes[j], int(gt_labels[j]), sizes, anchors, shape)
                image = data_batch["inputs"][k]  # as loaded: uint8, BGR, before normalisation
                h, w = image.shape[-2:]
                self._maps.append((image.flip(0).permute(1, 2, 0).cpu().numpy(), conf[:h, :w].cpu().numpy(),
                                   iou[:h, :w].cpu().numpy(), gt_boxes[j].tolist(), sample.metainfo.get("img_id")))

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not self._measurable:
            return
        from mmengine.dist import all_gather_object, get_rank
        objects = [o for part in all_gather_object(self._objects) for o in part]
        self.result = HeadConsistency.pool(objects)
        if get_rank() != 0:
            return
        if self.maps_path and self._maps:
            draw_maps(self._maps, self.maps_path, f"iteration {runner.iter}: rho {self.result.spearman:.3f}, "
                                                  f"top-1 {self.result.top1:.3f}, IoU ratio {self.result.iou_ratio:.3f}")
        if self.on_result is not None:
            self.on_result(self.result, runner.iter)


def draw_maps(maps: list[tuple], path: str, title: str) -> None:
    """One row per image: the image with the object's box, the confidence map, the IoU map
    (brighter is higher, each on [0, 1]), as the paper's Figure 1 shows them."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    fig, axes = plt.subplots(len(maps), 3, figsize=(9, 3 * len(maps)), squeeze=False)
    for row, (image, conf, iou, box, img_id) in zip(axes, maps):
        row[0].imshow(image)
        row[0].add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, color="lime"))
        row[0].set_title(f"image {img_id}, its largest object", fontsize=9)
        row[1].imshow(conf, cmap="gray", vmin=0, vmax=1)
        row[1].set_title("classification confidence", fontsize=9)
        row[2].imshow(iou, cmap="gray", vmin=0, vmax=1)
        row[2].set_title("IoU of the predicted box", fontsize=9)
        for ax in row:
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
