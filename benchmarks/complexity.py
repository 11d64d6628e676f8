"""Table 7: parameters and FLOPs of FCOS and MuSu #A=1..5 (ResNet-50, 1333x800).

    .venv/bin/python benchmarks/complexity.py [--json]

Counted by ``musu.complexity`` (mmcv 1.x's rules, as the paper's toolchain).
"""
from __future__ import annotations

import argparse
import json
import platform

import torch

PAPER = {"FCOS": (32.07, 205.3), "MuSu (#A = 1)": (32.07, 205.3), "MuSu (#A = 2)": (32.27, 209.5),
         "MuSu (#A = 3)": (32.46, 213.7), "MuSu (#A = 4)": (32.66, 217.8), "MuSu (#A = 5)": (32.85, 222.0)}


def build(config: str, options: dict | None = None):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from musu.train import load_config
    import musu.models  # noqa: F401
    register_all_modules()
    cfg = load_config(config, options)
    model = MODELS.build(cfg.model)
    model.eval()
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from musu.complexity import complexity
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    models = [("FCOS", "fcos_r50_1x_coco", {})] + [
        (f"MuSu (#A = {a})", "musu_r50_1x_coco", {"model.bbox_head.num_anchors": a}) for a in range(1, 6)]
    for name, config, options in models:
        c = complexity(build(config, options), (1333, 800))
        c1280 = complexity(build(config, options), (1280, 800))
        rows.append(dict(model=name, params_M=round(c["params"], 2), params_total_M=round(c["params_total"], 2),
                         flops_G=round(c["flops"], 1), flops_1280_G=round(c1280["flops"], 1),
                         paper_params_M=PAPER[name][0], paper_flops_G=PAPER[name][1]))
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}")
    print("| model | trainable params (M) | all params (M) | paper params (M) | FLOPs 1333x800 (G) | "
          "FLOPs 1280x800 (G) | paper FLOPs (G) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params_M']:.2f} | {r['params_total_M']:.2f} | {r['paper_params_M']:.2f} | "
              f"{r['flops_G']:.1f} | {r['flops_1280_G']:.1f} | {r['paper_flops_G']:.1f} |")


if __name__ == "__main__":
    main()
