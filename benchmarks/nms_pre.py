"""Table 7's FPS trend and mmdet's per-level candidate cap (issue 25, item 6).

    .venv/bin/python benchmarks/nms_pre.py [--size 800 1333] [--repeats 5] [--device cpu]

The paper's FPS falls by a quarter from #A = 1 to #A = 5 ("more items processed
in the time-costing NMS"); on an H200 the suite's fell by 4%
(docs/benchmarks.md). The hypothesis: mmdet keeps at most ``nms_pre`` = 1000
(anchor, class) candidates per pyramid level before NMS whatever #A, so NMS
sees nearly the same number of boxes at every #A. This measures, for #A = 1..5,
with the cap fixed (mmdet's) and with the cap scaled by #A:

- how many boxes reach NMS (a count: the same on any device), and
- MuSu's post-processing (``MuSuHead.predict_by_feat``: threshold, top-k per
  level, decoding, NMS, 100 kept) per image, on this device.

Head outputs are synthetic and the same for every setting (only #A and the cap
change): boxes a stride to four strides wide around each location, and one
of two score regimes: ``busy``, every candidate above the 0.05 threshold (the
upper bound inference.py also uses), and ``sparse``, 1% of (anchor, class)
pairs above it. Neither is a trained model's distribution; together they
bracket how much the cap can matter. Above 10,000 boxes mmcv's
``batched_nms`` switches from one NMS over offset boxes to one NMS per class
(its ``split_thr``), as it would in the model: part of what a larger cap costs.
Whole-model FPS with either cap: ``inference.py --nms-pre-per-anchor``.
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch

STRIDES = (8, 16, 32, 64, 128)
CLASSES = 80
CAP = 1000


def head(num_anchors: int, nms_pre: int):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict

    import musu.models  # noqa: F401  (registers MuSuHead)
    register_all_modules()
    return MODELS.build(dict(
        type="MuSuHead", num_classes=CLASSES, in_channels=8, feat_channels=8, stacked_convs=1, strides=STRIDES,
        num_anchors=num_anchors, norm_cfg=dict(type="GN", num_groups=8, requires_grad=True),
        test_cfg=ConfigDict(nms_pre=nms_pre, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.6),
                            max_per_img=100))).eval()


def outputs(size: tuple[int, int], num_anchors: int, regime: str, device: str, seed: int = 0):
    """Class logits, distances and objectness logits per level, as ``MuSuHead.forward`` returns them."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    cls, dist, obj = [], [], []
    for s in STRIDES:
        fh, fw = math.ceil(h / s), math.ceil(w / s)
        if regime == "busy":  # sigmoid(3) * sigmoid(3) = 0.91: every pair above 0.05
            logits = torch.rand(1, num_anchors * CLASSES, fh, fw, generator=g) + 3.0
        else:  # 1% of pairs at sigmoid(3)^2, the rest at sigmoid(-6) * sigmoid(3): below 0.05
            hot = torch.rand(1, num_anchors * CLASSES, fh, fw, generator=g) < 0.01
            logits = torch.where(hot, torch.tensor(3.0), torch.tensor(-6.0)) + torch.rand(hot.shape, generator=g)
        cls.append(logits.to(device))
        dist.append((s * (1 + 3 * torch.rand(1, num_anchors * 4, fh, fw, generator=g))).to(device))
        obj.append(torch.full((1, num_anchors, fh, fw), 3.0).to(device))
    return cls, dist, obj


def to_nms(model, cls, dist, obj, size) -> int:
    """Boxes that reach NMS: per level, the candidates above the threshold, at most nms_pre."""
    from mmdet.models.utils import filter_scores_and_topk
    n = 0
    for c, d, o in zip(cls, dist, obj):
        flat_c, _, flat_o = model._flatten([c], [d], [o])
        probs = model.final_probs(flat_c[0], flat_o[0])
        n += len(filter_scores_and_topk(probs, 0.05, model.test_cfg.nms_pre)[0])
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, nargs=2, default=[800, 1333])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    size, dev = tuple(args.size), args.device
    name = torch.cuda.get_device_name() if dev == "cuda" else (platform.processor() or platform.machine())
    print(f"device: {dev} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"input {size[0]}x{size[1]}, median of {args.repeats}")
    meta = [dict(img_shape=size, scale_factor=(1.0, 1.0), ori_shape=size)]
    for regime in ("busy", "sparse"):
        print(f"\n{regime}: | #A | cap per level | boxes to NMS | post-processing ms | relative to #A = 1 |")
        print("|---|---|---|---|---|")
        base = {}
        for policy in ("fixed", "per-anchor"):
            for a in range(1, 6):
                cap = CAP * (a if policy == "per-anchor" else 1)
                model = head(a, cap).to(dev)
                cls, dist, obj = outputs(size, a, regime, dev)
                boxes = to_nms(model, cls, dist, obj, size)
                times = []
                with torch.no_grad():
                    model.predict_by_feat(cls, dist, obj, batch_img_metas=meta, rescale=False)
                    for _ in range(args.repeats):
                        if dev == "cuda":
                            torch.cuda.synchronize()
                        t = time.perf_counter()
                        model.predict_by_feat(cls, dist, obj, batch_img_metas=meta, rescale=False)
                        if dev == "cuda":
                            torch.cuda.synchronize()
                        times.append(time.perf_counter() - t)
                ms = 1000 * statistics.median(times)
                base.setdefault(policy, ms)
                print(f"| {a} | {cap} ({policy}) | {boxes} | {ms:.1f} | {ms / base[policy]:.2f} |")


if __name__ == "__main__":
    main()
