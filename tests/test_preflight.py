"""Preflight: each job checks what its config needs on its own device before
the first iteration; `reproduce check` runs the same checks ahead of time."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from musu.train import load_config
from reproduce.node import preflight
from reproduce.cli import main
from conftest import raw_runs

REPRODUCE = [sys.executable, "-m", "reproduce.cli"]


def by_name(checks):
    return {c.name: c for c in checks}


def test_a_cpu_config_passes_on_cpu(tmp_path):
    from musu.data import SyntheticSpec, generate
    root = generate(tmp_path / "data", SyntheticSpec(num_train=2, num_val=2, image_size=64, seed=0))
    cfg = load_config("smoke/fcos_tiny_synthetic", {
        "train_dataloader.dataset.data_root": f"{root}/", "val_dataloader.dataset.data_root": f"{root}/",
        "train_dataloader.dataset.ann_file": "annotations/train.json",
        "val_dataloader.dataset.ann_file": "annotations/val.json"})
    checks = by_name(preflight.run_checks(cfg, device="cpu", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}"))
    assert all(c.ok for c in checks.values()), [c.line() for c in checks.values()]
    assert set(checks) == {"device", "nms", "focal_loss", "dataset", "weights", "tracking"}
    assert "dcnv2" not in checks  # the smoke FCOS has no DCN


def test_dcn_is_checked_where_the_config_uses_it():
    checks = by_name(preflight.run_checks(load_config("musu_r101-dcn_ms-640-800_2x_coco"), device="cpu"))
    assert checks["dcnv2"].ok, checks["dcnv2"].line()
    assert "focal_loss" not in checks  # MuSu's own loss, not mmcv's


def test_missing_data_weights_and_gpus_each_fail_with_their_fix(tmp_path):
    cfg = load_config("musu_r50_1x_coco", {"train_dataloader.dataset.data_root": str(tmp_path / "nowhere") + "/"})
    checks = by_name(preflight.run_checks(cfg, device="cpu", gpus=1))
    assert not checks["device"].ok and "sees none" in checks["device"].detail
    assert not checks["dataset"].ok and "nowhere" in checks["dataset"].detail
    assert not checks["weights"].ok and "not in the cache" in checks["weights"].detail
    assert "hub/checkpoints" in checks["weights"].fix
    with pytest.raises(preflight.PreflightError) as info:
        preflight.require(cfg, device="cpu", gpus=1)
    assert "\n" not in str(info.value) and "weights" in str(info.value)


def test_check_smoke_passes_here(tmp_path, capsys):
    assert main(["check", "all", "--profile", "smoke", "--workdir", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["ok"] for r in rows)
    assert {r["name"] for r in rows} >= {"device", "nms", "dataset", "weights", "tracking"}


def test_check_paper_here_says_it_wants_gpus_on_one_line(tmp_path):
    out = subprocess.run([*REPRODUCE, "check", "all", "--profile", "paper", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert "8 GPU(s) and this machine has 0" in out.stderr


def test_run_refuses_a_gpu_profile_on_a_machine_without_gpus(tmp_path, capsys, ci_sweeps):
    text = (ci_sweeps / "profiles" / "ci.yaml").read_text().replace("gpus: 0", "gpus: 1")
    (ci_sweeps / "profiles" / "ci.yaml").write_text(text)
    code = main(["run", "soft_hard", "--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "1 GPU(s) and this machine has 0" in err
    assert not (tmp_path / ".reproduce" / "state" / "jobs.json").exists()


@pytest.mark.slow
def test_a_job_fails_at_preflight_before_its_first_iteration(tmp_path, ci_sweeps):
    from reproduce import tracking
    missing = "  model.backbone.init_cfg: {_delete_: true, type: Pretrained, checkpoint: /nonexistent/r18.pth}\n"
    text = (ci_sweeps / "profiles" / "ci.yaml").read_text().replace("cfg_options:\n", "cfg_options:\n" + missing)
    (ci_sweeps / "profiles" / "ci.yaml").write_text(text)
    args = ["--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir", str(tmp_path)]
    out = subprocess.run([*REPRODUCE, "run", "soft_hard", *args, "--poll", "1"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 1 and "0/2 finished" in out.stderr, out.stderr[-2000:]
    status = json.loads(subprocess.run([*REPRODUCE, "status", "soft_hard", *args, "--json"], cwd=tmp_path,
                                       capture_output=True, text=True, timeout=300).stdout)
    for row in status:
        assert row["state"] == "failed" and "preflight failed: weights" in row["detail"], row
        assert "/nonexistent/r18.pth" in row["detail"]
    cl = tracking.client(f"sqlite:///{tmp_path / 'mlruns.db'}")
    for runs in raw_runs(cl, "ci").values():
        assert not cl.get_metric_history(runs[0].info.run_id, "train/loss"), "no iteration ran"


@pytest.mark.slow
def test_check_runs_as_one_job_on_the_cluster(tmp_path, ci_sweeps, slurm_cluster):
    out = subprocess.run([*REPRODUCE, "check", "soft_hard", "--profile", "ci", "--sweeps", str(ci_sweeps),
                          "--workdir", str(tmp_path), "--cluster", slurm_cluster, "--json"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)
    assert rows and all(r["ok"] for r in rows) and {r["task"] for r in rows} == {0}
    assert "check job" in out.stderr


def test_overrides_that_do_not_merge_are_one_line(tmp_path, capsys, ci_sweeps):
    profile = ci_sweeps / "profiles" / "ci.yaml"
    bad = "  model.backbone.init_cfg: {type: Pretrained, checkpoint: /w.pth}\n"  # the base has None: needs _delete_
    profile.write_text(profile.read_text().replace("cfg_options:\n", "cfg_options:\n" + bad))
    code = main(["plan", "soft_hard", "--profile", "ci", "--sweeps", str(ci_sweeps)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "do not merge into config" in err and "_delete_" in err
