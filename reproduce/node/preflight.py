"""Preflight: everything a config needs, tried once on tiny inputs on the
device that will train it, before any GPU-hour is spent.

A job runs it before its first iteration (``job.run_training``); ``reproduce
check`` runs the same checks on the cluster as one short job. Without it, a
CPU-only mmcv fails at the first evaluation: NMS on CUDA tensors, after 90k
iterations on 8 GPUs. Each failed check names its fix on one line.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reproduce.tracking import credentials
from reproduce.node import weights
from reproduce.errors import first_line


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.name}: {self.detail}" + (f" ({self.fix})" if not self.ok and self.fix else "")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class PreflightError(RuntimeError):
    """One line per failed check: what failed and how to fix it."""


def job_device() -> str:
    """The device this process trains on: its local rank's GPU, else the CPU."""
    import torch
    if not torch.cuda.is_available():
        return "cpu"
    rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))
    return f"cuda:{rank % torch.cuda.device_count()}"


def device_name(device: str) -> str:
    import platform

    import torch
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _uses_dcn(cfg) -> bool:
    model = cfg.get("model", {})
    return bool(model.get("backbone", {}).get("dcn")) or bool(model.get("bbox_head", {}).get("dcn_on_last_conv"))


def _uses_mmcv_focal_loss(cfg) -> bool:
    loss = cfg.get("model", {}).get("bbox_head", {}).get("loss_cls", {}) or {}
    head = cfg.get("model", {}).get("bbox_head", {}).get("type", "")
    return head != "MuSuHead" and loss.get("type") == "FocalLoss" and loss.get("use_sigmoid", True)


def needs(cfg) -> tuple[bool, bool, tuple[str, ...]]:
    """What the checks of ``cfg`` depend on: DCN, mmcv's focal loss, its pretrained weights."""
    return _uses_dcn(cfg), _uses_mmcv_focal_loss(cfg), tuple(weights.pretrained(cfg))


def _try(name: str, fn, fix: str) -> Check:
    try:
        detail = fn()
        return Check(name, True, detail or "ok")
    except Exception as exc:  # noqa: BLE001 - each failure becomes one line
        return Check(name, False, f"{type(exc).__name__}: {first_line(exc, 200)}", fix)


def _nms(device: str) -> str:
    import torch
    from mmcv.ops import batched_nms
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32, device=device)
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    _, keep = batched_nms(boxes, scores, torch.zeros(3, dtype=torch.long, device=device),
                          dict(type="nms", iou_threshold=0.5))
    assert sorted(keep.tolist()) == [0, 2], keep.tolist()
    return f"mmcv NMS on {device}"


def _dcn(device: str, version: int = 2) -> str:
    """mmcv's modulated (DCNv2) or plain (DCNv1) deformable convolution, forward and backward."""
    import torch
    from mmcv.ops import DeformConv2dPack, ModulatedDeformConv2dPack
    conv = (ModulatedDeformConv2dPack if version == 2 else DeformConv2dPack)(4, 4, 3, padding=1).to(device)
    out = conv(torch.randn(1, 4, 8, 8, device=device))
    out.sum().backward()
    assert out.shape == (1, 4, 8, 8)
    return f"mmcv DCNv{version} forward and backward on {device}"


def _focal(device: str) -> str:
    import torch
    if not device.startswith("cuda"):
        return "not used on CPU (mmdet falls back to its PyTorch focal loss)"
    from mmcv.ops import sigmoid_focal_loss
    logits = torch.randn(4, 3, device=device, requires_grad=True)
    loss = sigmoid_focal_loss(logits, torch.tensor([0, 1, 2, 0], device=device), 2.0, 0.25, None, "mean")
    loss.backward()
    return f"mmcv sigmoid focal loss on {device}"


def _dataset(cfg) -> str:
    from PIL import Image
    ds = cfg.train_dataloader.dataset
    while "dataset" in ds:
        ds = ds["dataset"]
    root = Path(ds.get("data_root", ""))
    loaders = [("train", cfg.train_dataloader), ("val", cfg.val_dataloader)]
    if cfg.get("test_evaluator", {}).get("format_only"):  # an unlabeled split the job writes detections for
        loaders.append(("test", cfg.test_dataloader))
    for split, loader in loaders:
        d = loader.dataset
        while "dataset" in d:
            d = d["dataset"]
        ann = Path(d.get("data_root", "")) / d["ann_file"]
        with open(ann) as fh:
            data = json.load(fh)
        if not data.get("images"):
            raise ValueError(f"{ann} holds no images")
        first = Path(d.get("data_root", "")) / (d.get("data_prefix", {}) or {}).get("img", "") / \
            data["images"][0]["file_name"]
        with Image.open(first) as im:
            im.load()
    return f"annotations and a first image of each split readable under {root}"


def _weights(cfg) -> str:
    names = weights.pretrained(cfg)
    if not names:
        return "none needed (trained from scratch)"
    missing, corrupt = [], []
    for name in names:
        path = weights.cached_path(name)
        if path is None or not path.is_file():
            missing.append(f"{name} -> {path}")
        elif not weights.loads(path):
            corrupt.append(f"{name} -> {path}")
    if missing or corrupt:
        raise FileNotFoundError("; ".join((["not in the cache: " + ", ".join(missing)] if missing else [])
                                          + (["unreadable (truncated?): " + ", ".join(corrupt)] if corrupt else [])))
    return f"{len(names)} file(s) cached and loadable"


def _tracking(uri: str) -> str:
    from reproduce import tracking
    tracking.check(uri)
    return f"{credentials.redact(uri)} reachable"


def _device(device: str, gpus: int) -> str:
    if gpus and not device.startswith("cuda"):
        import torch
        raise RuntimeError(f"the profile trains on {gpus} GPU(s) per run but torch {torch.__version__} sees none "
                           f"(CUDA build: {torch.version.cuda or 'none'}, "
                           f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')!r})")
    return device_name(device)


def run_checks(cfg, *, device: str | None = None, gpus: int = 0, tracking_uri: str | None = None) -> list[Check]:
    """Every check ``cfg`` needs on ``device`` (the job's own by default)."""
    device = device or job_device()
    rebuild = "rebuild mmcv with CUDA ops: scripts/bootstrap.sh --cuda on a GPU node"
    checks = [_try("device", lambda: _device(device, gpus),
                   "submit with GPUs (the cluster profile's gpus_per_node) and a CUDA build of torch")]
    checks.append(_try("nms", lambda: _nms(device), rebuild if device != "cpu" else "scripts/bootstrap.sh --cpu"))
    if _uses_dcn(cfg):
        checks.append(_try("dcnv2", lambda: _dcn(device), rebuild))
    if _uses_mmcv_focal_loss(cfg):
        checks.append(_try("focal_loss", lambda: _focal(device), rebuild))
    checks.append(_try("dataset", lambda: _dataset(cfg), "check the profile's dataset paths from the compute node"))
    checks.append(_try("weights", lambda: _weights(cfg),
                       "`reproduce run` fetches them into the cluster profile's weights_cache before it "
                       "submits; jobs read that cache (TORCH_HOME/hub/checkpoints) and never download"))
    if tracking_uri:
        checks.append(_try("tracking", lambda: _tracking(tracking_uri),
                           "start the tracking server, or pass a store the compute nodes reach"))
    return checks


def require(cfg, *, device: str | None = None, gpus: int = 0, tracking_uri: str | None = None) -> list[Check]:
    """``run_checks``, raising ``PreflightError`` (one line per failure) if any failed."""
    checks = run_checks(cfg, device=device, gpus=gpus, tracking_uri=tracking_uri)
    failed = [c for c in checks if not c.ok]
    if failed:
        raise PreflightError("preflight failed: " + "; ".join(c.line() for c in failed))
    return checks


def mmcv_ops(device: str) -> list[Check]:
    """Every mmcv op the suite's configs call, once on tiny tensors: what a build of mmcv
    (scripts/bootstrap.sh, its op subset included) must pass before it is called ready."""
    fix = "remove the wheel cache's folder for this build key and rerun scripts/bootstrap.sh"
    return [_try("nms", lambda: _nms(device), fix), _try("dcnv2", lambda: _dcn(device), fix),
            _try("dcnv1", lambda: _dcn(device, 1), fix), _try("focal_loss", lambda: _focal(device), fix)]


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m reproduce.node.preflight", description=mmcv_ops.__doc__)
    ap.add_argument("--ops", action="store_true", required=True,
                    help="run each mmcv op the suite calls on the CPU, and on the GPU where one is seen")
    ap.parse_args(argv)
    import torch
    devices = ["cpu"] + (["cuda:0"] if torch.cuda.is_available() else [])
    failed = 0
    for device in devices:
        for check in mmcv_ops(device):
            print(("ok    " if check.ok else "FAILED ") + check.line())
            failed += not check.ok
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
