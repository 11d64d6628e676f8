"""Inference throughput (Table 7's FPS column): MuSu #A = 1..5 against FCOS.

    .venv/bin/python benchmarks/inference.py [--size 800 1333] [--images 20] [--device cuda]

Whole ``model.predict`` (backbone, neck, head, decoding, score threshold 0.05,
top-1000 per level, NMS 0.6, 100 detections), batch 1, randomly initialised
weights whose classification bias is raised so that every level sends its
full cap of candidates to NMS (1000; 1000 x #A for MuSu with
``--nms-pre-per-anchor``), as a trained model does on a busy image. Models
are timed interleaved in one process. Defaults fit a CPU (512x853).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from train_step import batch, build


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, nargs=2, default=[512, 853])
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--nms-pre-per-anchor", action="store_true",
                    help="MuSu's cap of candidates per level before NMS 1000 x #A, not mmdet's 1000 (nms_pre.py)")
    args = ap.parse_args()
    dev = args.device
    h, w = args.size
    models = {"FCOS": build("fcos_r50_1x_coco", {}, dev)}
    for a in range(1, 6):
        options = {"model.bbox_head.num_anchors": a}
        if args.nms_pre_per_anchor:
            options["model.test_cfg.nms_pre"] = 1000 * a
        models[f"MuSu #A={a}"] = build("musu_r50_1x_coco", options, dev)
    for m in models.values():
        m.eval()
        with torch.no_grad():
            m.bbox_head.conv_cls.bias.fill_(2.0)
    inputs, samples = batch(1, h, w, 1, dev)
    times = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            m.predict(inputs, samples)
        for _ in range(args.images):
            for k, m in models.items():
                if dev == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                m.predict(inputs, samples)
                if dev == "cuda":
                    torch.cuda.synchronize()
                times[k].append(time.perf_counter() - t)
    name = torch.cuda.get_device_name() if dev == "cuda" else (platform.processor() or platform.machine())
    cap = "1000 x #A" if args.nms_pre_per_anchor else "1000"
    print(f"device: {dev} ({name}), torch {torch.__version__}, input {h}x{w}, {args.images} images each, "
          f"MuSu's candidates per level before NMS: {cap}")
    base = 1.0 / statistics.median(times["FCOS"])
    print("| model | images/s | relative to FCOS |")
    print("|---|---|---|")
    for k, v in times.items():
        fps = 1.0 / statistics.median(v)
        print(f"| {k} | {fps:.2f} | {fps / base:.3f} |")


if __name__ == "__main__":
    main()
