"""MuSu against FCOS trained the same way on the synthetic set (CPU).

    .venv/bin/python benchmarks/train_synthetic.py [--iters 300] [--out DIR]

Both use the smoke network (ResNet-18 from scratch, 64-channel FPN and head,
256 px, batch 4) on the default synthetic set (64 train / 16 val images),
300 iterations, evaluated on the val split with pycocotools. An untrained
MuSu is evaluated too, as the floor.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("work_dirs/bench-train"))
    args = ap.parse_args()
    from musu.data import SyntheticSpec, generate
    data = generate(args.out / "data", SyntheticSpec())
    rows = []
    for name in ("musu", "fcos"):
        work = args.out / name
        log = args.out / f"{name}.log"
        cmd = [sys.executable, "-m", "musu.train", f"smoke/{name}_tiny_synthetic", "--work-dir", str(work),
               "--data-root", str(data), "--no-resume", "--cfg-options", f"train_cfg.max_iters={args.iters}",
               f"train_cfg.val_interval={args.iters}", "randomness.seed=0"]
        start = time.time()
        with open(log, "w") as fh:
            subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=True)
        wall = time.time() - start
        text = log.read_text()
        metrics = {k: float(v) for k, v in re.findall(r"^coco/(bbox_mAP\w*): ([\d.]+)$", text, re.M)}
        iter_times = [float(t) for t in re.findall(r"Iter\(train\).*?\stime: ([\d.]+)", text)]
        rows.append(dict(model=name, AP=100 * metrics["bbox_mAP"], AP50=100 * metrics["bbox_mAP_50"],
                         AP75=100 * metrics["bbox_mAP_75"], sec_per_iter=sum(iter_times[1:]) / max(1, len(iter_times) - 1),
                         wall_s=wall))
    print(f"machine: {platform.node()} ({platform.machine()}), {args.iters} iterations")
    print("| model | AP | AP50 | AP75 | s/iter | wall (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['AP']:.1f} | {r['AP50']:.1f} | {r['AP75']:.1f} | {r['sec_per_iter']:.2f} | "
              f"{r['wall_s']:.0f} |")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
