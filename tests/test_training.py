"""A tiny MuSu trains for real through mmengine's Runner on CPU, evaluates with
pycocotools, is killed after a checkpoint, resumes, and beats the untrained model."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ITERS, CKPT = 60, 20


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from musu.data import SyntheticSpec, generate
    root = tmp_path_factory.mktemp("syn")
    # Evaluated on its own training images: the point is that learning happens.
    return generate(root, SyntheticSpec(num_train=12, num_val=12, image_size=128, min_size=20, max_size=64,
                                        max_objects=3, seed=1))


def _options(extra=()):
    return ["--cfg-options", f"train_cfg.max_iters={ITERS}", f"train_cfg.val_interval={ITERS}",
            f"default_hooks.checkpoint.interval={CKPT}", "default_hooks.logger.interval=5",
            "train_dataloader.batch_size=4", "param_scheduler.0.end=10", "param_scheduler.1.milestones=[50]",
            "val_dataloader.dataset.ann_file=annotations/train.json", "val_dataloader.dataset.data_prefix.img=train/",
            "test_dataloader.dataset.ann_file=annotations/train.json",
            "test_dataloader.dataset.data_prefix.img=train/", *extra]


def _train(config, data, work_dir, kill_after_checkpoint=False):
    cmd = [sys.executable, "-m", "musu.train", config, "--work-dir", str(work_dir), "--data-root", str(data),
           *_options()]
    # The evaluator must read the same (training) annotations.
    cmd.append(f"val_evaluator.ann_file={data}/annotations/train.json")
    log = open(work_dir.parent / f"{work_dir.name}.log", "a")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if kill_after_checkpoint:
        deadline = time.time() + 600
        while not (work_dir / f"iter_{CKPT}.pth").exists():
            assert proc.poll() is None, (work_dir.parent / f"{work_dir.name}.log").read_text()[-3000:]
            assert time.time() < deadline
            time.sleep(0.5)
        time.sleep(1.0)  # let the checkpoint file be complete
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None
    assert proc.wait(timeout=1200) == 0, (work_dir.parent / f"{work_dir.name}.log").read_text()[-3000:]
    text = (work_dir.parent / f"{work_dir.name}.log").read_text()
    return {k: float(v) for k, v in re.findall(r"^(coco/bbox_mAP\w*): ([\d.]+)$", text, re.M)}, text


def _untrained_map(config, data):
    from mmengine.runner import Runner

    import musu.models  # noqa: F401
    from musu.train import load_config, set_data_root
    cfg = load_config(config)
    set_data_root(cfg, data, val_ann="annotations/train.json", val_img="train/")
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator
    cfg.work_dir = str(data.parent / f"untrained-{Path(config).name}")
    runner = Runner.from_cfg(cfg)
    return runner.test()["coco/bbox_mAP_50"]


def test_musu_trains_resumes_and_learns(data, tmp_path):
    work = tmp_path / "musu"
    work.mkdir()
    _train("smoke/musu_tiny_synthetic", data, work, kill_after_checkpoint=True)
    assert (work / f"iter_{CKPT}.pth").exists() and not (work / f"iter_{ITERS}.pth").exists()
    metrics, log = _train("smoke/musu_tiny_synthetic", data, work)
    # Resumed (under torch >= 2.6's weights_only loading) at the checkpoint, not from scratch.
    assert f"resumed epoch: 0, iter: {CKPT}" in log
    assert (work / f"iter_{ITERS}.pth").exists()
    untrained = _untrained_map("smoke/musu_tiny_synthetic", data)
    assert untrained < 0.02
    assert metrics["coco/bbox_mAP_50"] > untrained + 0.05, (metrics, untrained)
