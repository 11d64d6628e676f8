"""Label assignment cost: MuSu against FCOS's targets and ATSS's assigner.

    .venv/bin/python benchmarks/assignment.py [--device cpu|cuda] [--repeats 5]

One 800x1333 image (20,267 locations over P3-P7, x #A), 1 to 200 objects,
identical random head outputs for every method. Reported: median wall time of
  * ``mutual_assign`` alone (100 objects, 60k anchors is the issue's target),
  * MuSu's whole ``loss_by_feat`` (assignment + Eq. 7 + GIoU) for #A = 1 and 3,
  * FCOS's whole ``loss_by_feat`` (targets + focal + IoU + centerness),
  * mmdet's ``ATSSAssigner.assign`` (assignment only),
and the ratio of MuSu's loss to FCOS's.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

STRIDES = [8, 16, 32, 64, 128]
H, W = 800, 1333


def sizes():
    return [((H + s - 1) // s, (W + s - 1) // s) for s in STRIDES]


def timed(fn, repeats, device):
    times = []
    for i in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first call warms up
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def gts(n, device, seed=0):
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(n, 2, generator=g) * torch.tensor([300.0, 300.0]) + 16
    xy = torch.rand(n, 2, generator=g) * (torch.tensor([W, H]) - wh)
    boxes = torch.cat([xy, xy + wh], 1).to(device)
    return InstanceData(bboxes=boxes, labels=torch.randint(0, 80, (n,), generator=g).to(device))


def head_outputs(num_anchors, with_centerness, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = num_anchors
    cls = [torch.randn(1, 80 * a, h, w, generator=g).to(device) - 4 for h, w in sizes()]
    reg = [(torch.rand(1, 4 * a, h, w, generator=g) * 4 * s).to(device) + s / 2 for (h, w), s in zip(sizes(), STRIDES)]
    obj = [torch.randn(1, a if with_centerness == "musu" else 1, h, w, generator=g).to(device) for h, w in sizes()]
    for t in cls + reg + obj:
        t.requires_grad_(True)
    return cls, reg, obj


def build(kind, num_anchors=1):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import musu.models  # noqa: F401
    register_all_modules()
    common = dict(num_classes=80, in_channels=256, strides=STRIDES, norm_cfg=dict(type="GN", num_groups=32))
    if kind == "fcos":
        return MODELS.build(dict(type="FCOSHead", **common))
    return MODELS.build(dict(type="MuSuHead", num_anchors=num_anchors, **common))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--objects", default="1,10,50,100,200")
    args = ap.parse_args()
    dev = args.device
    from mmdet.models.task_modules.assigners import ATSSAssigner
    from mmengine.structures import InstanceData

    from musu import mutual_assign
    name = torch.cuda.get_device_name() if dev == "cuda" else platform.processor() or platform.machine()
    print(f"device: {dev} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    meta = [dict(img_shape=(H, W), pad_shape=(H, W))]
    heads = {"fcos": build("fcos").to(dev), "musu1": build("musu", 1).to(dev), "musu3": build("musu", 3).to(dev)}
    outs = {"fcos": head_outputs(1, "fcos", dev), "musu1": head_outputs(1, "musu", dev),
            "musu3": head_outputs(3, "musu", dev)}
    points = torch.cat(heads["fcos"].prior_generator.grid_priors(sizes(), device=dev))
    level_sizes = [h * w for h, w in sizes()]
    strides = torch.cat([torch.full((n,), float(s), device=dev) for n, s in zip(level_sizes, STRIDES)])
    anchors = torch.cat([points - 4 * strides[:, None], points + 4 * strides[:, None]], 1)
    atss = ATSSAssigner(topk=9)
    print("| objects | mutual_assign 60k anchors (ms) | MuSu loss #A=1 (ms) | MuSu loss #A=3 (ms) | "
          "FCOS loss (ms) | ATSS assign (ms) | MuSu/FCOS #A=1 |")
    print("|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(1)
    n60 = 60000
    pts60 = (torch.rand(n60, 2, generator=g) * torch.tensor([W, H])).to(dev)
    box60 = torch.cat([pts60 - 40, pts60 + 40], 1)
    prob60 = torch.rand(n60, 80, generator=g).to(dev)
    for n in [int(x) for x in args.objects.split(",")]:
        gt = gts(n, dev)
        t_assign = timed(lambda: mutual_assign(prob60, box60, pts60, gt.bboxes, gt.labels), args.repeats, dev)
        t = {}
        for key in ("musu1", "musu3", "fcos"):
            head, (c, r, o) = heads[key], outs[key]
            t[key] = timed(lambda: head.loss_by_feat(c, r, o, [gt], meta), args.repeats, dev)
        pred = InstanceData(priors=anchors)
        t_atss = timed(lambda: atss.assign(pred, level_sizes, gt), args.repeats, dev)
        print(f"| {n} | {t_assign:.1f} | {t['musu1']:.1f} | {t['musu3']:.1f} | {t['fcos']:.1f} | {t_atss:.1f} | "
              f"{t['musu1'] / t['fcos']:.2f} |")


if __name__ == "__main__":
    main()
