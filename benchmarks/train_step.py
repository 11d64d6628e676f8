"""Training step: MuSu (#A = 1, 3) against FCOS, same backbone, batch and input.

    .venv/bin/python benchmarks/train_step.py [--size 800 1333] [--batch 2] [--repeats 10] [--device cuda]

One forward and backward of the whole detector (ResNet-50 caffe + FPN +
head + targets + losses), randomly initialised, on the same random batch
with 20 objects per image. Models are timed interleaved in one process, so
the ratio to FCOS is measured under the same conditions. Defaults fit a CPU:
512x853, batch 2; pass --size 800 1333 on a GPU for the paper's setting.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch


def batch(n_img, h, w, n_obj, device, seed=0):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n_img, 3, h, w, generator=g).to(device)
    samples = []
    for _ in range(n_img):
        wh = torch.rand(n_obj, 2, generator=g) * torch.tensor([w / 3, h / 3]) + 16
        xy = torch.rand(n_obj, 2, generator=g) * (torch.tensor([w, h]) - wh)
        s = DetDataSample(metainfo=dict(img_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                                        scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + wh], 1).to(device),
                                      labels=torch.randint(0, 80, (n_obj,), generator=g).to(device))
        samples.append(s)
    return inputs, samples


def build(config, options, device):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import musu.models  # noqa: F401
    from musu.train import load_config
    register_all_modules()
    cfg = load_config(config, options)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model).to(device)
    model.init_weights()
    model.train()
    return model


def step(model, inputs, samples, device):
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    losses = model.loss(inputs, samples)
    total = sum(v for k, v in losses.items() if "loss" in k)
    total.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, nargs=2, default=[512, 853])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--objects", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = args.device
    h, w = args.size
    models = {"FCOS": build("fcos_r50_1x_coco", {}, dev),
              "MuSu #A=1": build("musu_r50_1x_coco", {}, dev),
              "MuSu #A=3": build("musu_r50_1x_coco", {"model.bbox_head.num_anchors": 3}, dev)}
    inputs, samples = batch(args.batch, h, w, args.objects, dev)
    times = {k: [] for k in models}
    for name, m in models.items():  # warm-up
        step(m, inputs, samples, dev)
    for _ in range(args.repeats):
        for name, m in models.items():
            times[name].append(step(m, inputs, samples, dev))
    name = torch.cuda.get_device_name() if dev == "cuda" else (platform.processor() or platform.machine())
    print(f"device: {dev} ({name}), torch {torch.__version__}, input {h}x{w}, batch {args.batch}, "
          f"{args.objects} objects/image, {args.repeats} interleaved repeats")
    base = statistics.median(times["FCOS"])
    print("| model | median step (s) | ratio to FCOS |")
    print("|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {statistics.median(v):.3f} | {statistics.median(v) / base:.3f} |")


if __name__ == "__main__":
    main()
