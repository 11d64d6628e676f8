"""Train (and evaluate) one config through mmengine's Runner.

The thin layer every caller shares (the tests, the benchmarks, the local and
SLURM executors of ``reproduce``): load a config, point it at a dataset and a
work dir, resume from the work dir's last checkpoint when there is one, train,
and return the final COCO metrics.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from mmengine.config import Config, DictAction
from mmengine.hooks import Hook

from .configs import config_path


def load_config(config: str | os.PathLike, options: dict[str, Any] | None = None,
                config_dirs: tuple[str | Path, ...] = (), data_root: str | os.PathLike | None = None) -> Config:
    """A config by name (``musu_r50_1x_coco``; see ``config_path`` for where names
    resolve), with dotted-key overrides merged in, pointed at ``data_root`` when given."""
    cfg = Config.fromfile(str(config_path(str(config), tuple(config_dirs))))
    if options:
        cfg.merge_from_dict(dict(options))
    if data_root is not None:
        set_data_root(cfg, data_root)
    return cfg


def set_data_root(cfg: Config, root: str | os.PathLike, train_ann: str | None = None, val_ann: str | None = None,
                  train_img: str | None = None, val_img: str | None = None) -> Config:
    """Point every dataloader and evaluator at a dataset root (the config's
    ``data_root`` variable is already substituted once the file is parsed).

    The one place a config learns where its data lies: ``reproduce`` plans a run
    without it (a dataset's location is no part of a run's identity, its files
    and generator settings are) and each job calls this with the root it reads."""
    root = str(root).rstrip("/") + "/"
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        ds = cfg[name]["dataset"]
        while "dataset" in ds:  # wrappers such as RepeatDataset
            ds = ds["dataset"]
        ds["data_root"] = root
        is_train = name == "train_dataloader"
        ann = train_ann if is_train else val_ann
        img = train_img if is_train else val_img
        if ann:
            ds["ann_file"] = ann
        if img:
            ds["data_prefix"] = dict(img=img)
    for evaluator, loader in (("val_evaluator", "val_dataloader"), ("test_evaluator", "test_dataloader")):
        ds = cfg[loader]["dataset"]
        while "dataset" in ds:
            ds = ds["dataset"]
        cfg[evaluator]["ann_file"] = os.path.join(root, ds["ann_file"])
    return cfg


def has_checkpoint(work_dir: str | os.PathLike) -> bool:
    """True when ``work_dir`` holds a loadable checkpoint to resume from (see ``ensure_resumable``)."""
    return ensure_resumable(work_dir) is not None


class CheckpointIOError(OSError):
    """A checkpoint the storage would not give back (NFS, Lustre): not proof it is bad."""


class CheckpointRefused(RuntimeError):
    """A checkpoint whose bytes are whole but which the loader refuses (a type a newer torch
    or mmengine will not unpickle): not damage. Setting it aside would restart training."""


IO_ATTEMPTS, IO_WAIT_S = 4, 2.0  # reads of a checkpoint the storage fails, and the back-off between them


def _intact(path: Path) -> bool:
    """True when ``path`` is a whole zip archive (torch.save's format) whose every member
    matches its checksum: a truncated or overwritten file is not."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, EOFError, ValueError):
        return False


def _loads(path: Path) -> bool:
    """True when ``path`` is a checkpoint mmengine can resume from; False when it is
    damaged (truncated, a broken archive) or not a checkpoint. An error of the storage
    itself is retried, then raised as ``CheckpointIOError``, and a whole file the loader
    refuses raises ``CheckpointRefused``: in both the file may be fine, and setting it
    aside would restart training from an older one, or from zero."""
    import torch

    from . import checkpoint_compat  # noqa: F401
    attempts = IO_ATTEMPTS
    for attempt in range(attempts):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            return isinstance(ckpt, dict) and "state_dict" in ckpt and "meta" in ckpt
        except FileNotFoundError:
            return False
        except OSError as exc:
            if attempt == attempts - 1:
                raise CheckpointIOError(f"checkpoint {path} could not be read after {attempts} tries ({exc}); "
                                        "left in place: this attempt fails and the next resumes from it") from exc
            time.sleep(IO_WAIT_S * (attempt + 1))
        except Exception as exc:  # noqa: BLE001 - damage, unless the archive is whole
            if _intact(path):
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                raise CheckpointRefused(
                    f"checkpoint {path} is whole but does not load ({type(exc).__name__}: {reason}); left in place: "
                    "this attempt fails. A newer torch or mmengine refuses a type in it: allow the type in "
                    "musu/checkpoint_compat.py, or run with the versions that wrote it") from exc
            return False
    return False


def ensure_resumable(work_dir: str | os.PathLike) -> Path | None:
    """Point mmengine's ``last_checkpoint`` at the newest checkpoint that loads.

    A job killed while writing leaves a truncated file; resuming from it would
    crash every requeue. Such a file is renamed ``*.corrupt`` (kept, never
    deleted) and the previous good checkpoint is used instead, with a warning.
    A file the storage will not read (an I/O error) is not judged: after
    retries ``CheckpointIOError`` is raised and nothing is renamed.
    """
    work_dir = Path(work_dir)
    marker = work_dir / "last_checkpoint"
    candidates = sorted(work_dir.glob("iter_*.pth"), key=lambda p: int(p.stem.split("_")[1]), reverse=True)
    if marker.is_file():
        named = Path(marker.read_text().strip())
        if named.is_file() and named not in candidates:
            candidates.insert(0, named)
    for path in candidates:
        if _loads(path):
            if not marker.is_file() or Path(marker.read_text().strip()) != path:
                marker.write_text(str(path))
            return path
        corrupt = path.with_name(path.name + ".corrupt")
        path.rename(corrupt)
        warnings.warn(f"checkpoint {path} is unreadable (truncated or corrupt); kept as {corrupt.name}, "
                      "resuming from the previous one", RuntimeWarning, stacklevel=2)
        print(f"[musu] warning: checkpoint {path} is unreadable; kept as {corrupt.name}, falling back",
              file=sys.stderr)
    if marker.is_file():
        marker.unlink()
    return None


def make_runner(cfg: Config, work_dir: str | os.PathLike, *, resume: bool, launcher: str = "none"):
    """mmengine's Runner for ``cfg`` in ``work_dir`` and the hook that keeps its final metrics.

    ``resume`` must already be decided (``has_checkpoint``): mmengine then
    resumes from ``work_dir/last_checkpoint``.
    """
    from mmengine.runner import Runner

    from . import checkpoint_compat  # noqa: F401  (before any checkpoint is read)

    cfg.work_dir = str(work_dir)
    cfg.launcher = launcher
    cfg.resume = bool(resume)
    cfg.load_from = None
    runner = Runner.from_cfg(cfg)
    capture = MetricsCapture()
    runner.register_hook(capture, priority="LOWEST")
    return runner, capture


def train(cfg: Config, work_dir: str | os.PathLike, *, resume: bool = True, launcher: str = "none") -> dict:
    """Train ``cfg`` in ``work_dir``; returns the metrics of the final evaluation."""
    runner, capture = make_runner(cfg, work_dir, resume=resume and has_checkpoint(work_dir), launcher=launcher)
    runner.train()
    return capture.metrics


class MetricsCapture(Hook):
    """Hook keeping the metrics of the last evaluation, for the caller to return.

    ``evaluated`` says whether an evaluation ran at all (a resumed run past its last
    iteration evaluates nothing), apart from what it found. A detector that keeps no box
    above the score threshold on the whole split makes mmdet's CocoMetric log an error and
    return no metrics; that is an evaluation with a result, COCO's for an empty detection
    list (AP 0; -1 for an area range without objects), filled in here so that a run of a
    detector that found nothing is finished at AP 0 rather than read as never evaluated."""

    def __init__(self) -> None:
        self.metrics: dict = {}
        self.evaluated = False

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.evaluated = True
        self.metrics = {k: float(v) for k, v in (metrics or {}).items()}
        if not self.metrics:
            for metric in getattr(runner.val_evaluator, "metrics", []):
                self.metrics.update(coco_metrics_without_detections(metric))
            if self.metrics and getattr(runner, "rank", 0) == 0:
                print("[musu] no detection above the score threshold on the whole split: COCO's metrics of an "
                      "empty result (AP 0)", file=sys.stderr, flush=True)


def coco_metrics_without_detections(metric) -> dict[str, float]:
    """COCOeval's bbox summary for no detections, under mmdet CocoMetric's names (``coco/bbox_mAP``,
    ...); {} for any other evaluator, or one that only writes files (format_only: test-dev)."""
    coco = getattr(metric, "_coco_api", None)
    if coco is None or getattr(metric, "format_only", False) or "bbox" not in getattr(metric, "metrics", []):
        return {}
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    empty = COCO()
    empty.dataset = {"images": coco.dataset["images"], "categories": coco.dataset["categories"], "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        empty.createIndex()
        ev = COCOeval(coco, empty, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l")
    prefix = getattr(metric, "prefix", None) or "coco"
    return {f"{prefix}/{name}": float(value) for name, value in zip(names, ev.stats[:6])}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Train one MuSu/FCOS config with mmengine's Runner.")
    ap.add_argument("config", help="config path or name (see musu.configs.available_configs())")
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--data-root", help="dataset root (COCO layout of the config)")
    ap.add_argument("--no-resume", action="store_true", help="start over even if the work dir has a checkpoint")
    ap.add_argument("--launcher", default="none", choices=["none", "pytorch", "slurm"])
    ap.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    args = ap.parse_args(argv)
    # A file named on this command line is its user's explicit choice: its folder is allowed.
    name, dirs = args.config, ()
    if Path(args.config).is_file():
        name, dirs = Path(args.config).name, (str(Path(args.config).resolve().parent),)
    cfg = load_config(name, args.cfg_options, dirs)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    metrics = train(cfg, args.work_dir, resume=not args.no_resume, launcher=args.launcher)
    for k, v in sorted(metrics.items()):
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
