"""Faults and bad input: a corrupt checkpoint, 8 writers on one SQLite store,
an unreachable tracking server, bad data, bad cluster profiles."""
from __future__ import annotations

import json
import os
import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import pytest

from reproduce import tracking
from reproduce.cli import main
from conftest import raw_runs


# ---- a truncated last checkpoint -----------------------------------------------------------------------
@pytest.mark.slow
def test_corrupt_last_checkpoint_falls_back(tmp_path):
    from musu.data import SyntheticSpec, generate
    from musu.train import ensure_resumable
    data = generate(tmp_path / "data", SyntheticSpec(num_train=4, num_val=2, image_size=96, min_size=16,
                                                     max_size=40, seed=2))
    work = tmp_path / "work"

    def train(iters):
        cmd = [sys.executable, "-m", "musu.train", "smoke/musu_tiny_synthetic", "--work-dir", str(work),
               "--data-root", str(data), "--cfg-options", f"train_cfg.max_iters={iters}",
               f"train_cfg.val_interval={iters}", "default_hooks.checkpoint.interval=2",
               "default_hooks.checkpoint.max_keep_ckpts=5", "train_dataloader.batch_size=2",
               "param_scheduler.0.end=2", "param_scheduler.1.milestones=[100]"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600)

    assert train(4).returncode == 0
    last = work / "iter_4.pth"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])  # a write cut short
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert ensure_resumable(work) == work / "iter_2.pth"
    assert (work / "iter_4.pth.corrupt").exists(), "the bad file is kept, not deleted"
    out = train(6)
    assert out.returncode == 0, out.stdout[-2000:]
    assert "resumed epoch: 0, iter: 2" in out.stdout + out.stderr
    assert (work / "iter_6.pth").exists()


# ---- many writers on one SQLite store ---------------------------------------------------------------------
def _writer(uri: str, index: int, steps: int) -> None:
    from mlflow.entities import Metric, Param
    from reproduce.tracking import Tracker, client, retry
    cl = client(uri)
    exp = Tracker(cl.tracking_uri).experiment("stress")
    run = retry(lambda: cl.create_run(exp, tags={tracking.TAG_HASH: f"h{index}"}))
    rid = run.info.run_id
    retry(lambda: cl.log_batch(rid, params=[Param(f"p{k}", str(k * index)) for k in range(50)]))
    for step in range(steps):
        retry(lambda: cl.log_batch(rid, metrics=[Metric("loss", float(step), 0, step),
                                                 Metric("lr", 0.01, 0, step)]))
    retry(lambda: cl.set_terminated(rid, "FINISHED"))


def test_eight_parallel_writers_lose_nothing(tmp_path):
    uri = tracking.check(f"sqlite:///{tmp_path / 'mlruns.db'}")  # initialises the schema once, as `run` does
    tracking.Tracker(uri).experiment("stress")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(uri, i, 40)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    cl = tracking.client(uri)
    runs = raw_runs(cl, "stress")
    assert sorted(runs) == sorted(f"h{i}" for i in range(8))
    for h, (run,) in runs.items():
        assert run.info.status == "FINISHED" and len(run.data.params) == 50
        assert [m.step for m in cl.get_metric_history(run.info.run_id, "loss")] == list(range(40))


# ---- bad input: one line, nothing submitted -------------------------------------------------------------
def _run(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def test_unreachable_tracking_server_fails_before_submitting(tmp_path, capsys, ci_sweeps):
    code, err = _run(capsys, "run", "soft_hard", "--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir",
                     str(tmp_path), "--tracking-uri", "http://127.0.0.1:9")
    assert code == 2 and err.count("\n") == 1
    assert "cannot be reached" in err and "nothing was submitted" in err
    assert not (tmp_path / ".reproduce" / "state" / "jobs.json").exists()


def _profile(sweeps: Path, **dataset):
    text = (sweeps / "profiles" / "ci.yaml").read_text()
    import yaml
    data = yaml.safe_load(text)
    data["dataset"].update(dataset)
    (sweeps / "profiles" / "ci.yaml").write_text(yaml.safe_dump(data))


@pytest.mark.parametrize("case,needle", [
    ("missing_root", "does not exist"),
    ("not_coco", "not a COCO annotation file"),
    ("not_json", "is not JSON"),
    ("empty", "holds no images"),
])
def test_bad_data_is_caught_before_submission(tmp_path, capsys, ci_sweeps, case, needle):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "train").mkdir()
    (root / "val").mkdir()
    ann = root / "annotations" / "x.json"
    if case == "missing_root":
        root = tmp_path / "nowhere"
    elif case == "not_coco":
        ann.write_text(json.dumps({"hello": 1}))
    elif case == "not_json":
        ann.write_text("<xml/>")
    else:
        ann.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    _profile(ci_sweeps, type="coco", root=str(root), train_ann="annotations/x.json", val_ann="annotations/x.json")
    code, err = _run(capsys, "run", "soft_hard", "--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir",
                     str(tmp_path))
    assert code == 2 and needle in err and err.count("\n") == 1 and "ci.yaml" in err
    assert not (tmp_path / ".reproduce" / "state" / "jobs.json").exists()


def test_unknown_cluster_and_bad_cluster_profile(tmp_path, capsys, ci_sweeps):
    code, err = _run(capsys, "run", "soft_hard", "--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir",
                     str(tmp_path), "--cluster", "nope")
    assert code == 2 and "unknown cluster 'nope'" in err


@pytest.mark.parametrize("text, needle", [
    ("setup: module load cuda\n", "field 'setup': expected a list of shell lines, got a string"),
    ("setup: [1, 2]\n", "field 'setup': expected a list of shell lines"),
    ("sbatch_extra: {signal: 'USR1@30'}\n", "option 'signal' is set by the suite"),
    ("sbatch_extra: {'--array': '0-3'}\n", "option '--array' is set by the suite"),
    ("sbatch_extra: {no_requeue: true}\n", "option 'no_requeue' is set by the suite"),
    ("sbatch_extra: {time: '10:00'}\n", "(set time_min)"),
    ("sbatch_extra: {constraint: [a100, h100]}\n", "option 'constraint' needs a single value"),
])
def test_cluster_profile_types_and_reserved_sbatch_options(tmp_path, capsys, ci_sweeps, text, needle):
    """Issue 11, item 12: a string `setup:` (one sbatch line per character) and
    sbatch_extra overriding what requeue-with-resume relies on are refused on one line."""
    profile = tmp_path / "mine.yaml"
    profile.write_text("partition: debug\n" + text)
    code, err = _run(capsys, "run", "soft_hard", "--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir",
                     str(tmp_path), "--cluster", str(profile))
    assert code == 2 and needle in err and err.count("\n") == 1 and "mine.yaml" in err, err
    assert not (tmp_path / ".reproduce" / "state" / "jobs.json").exists()


def test_cluster_profile_accepts_plain_extras(tmp_path):
    from reproduce.backends import clusters
    path = tmp_path / "ok.yaml"
    path.write_text("setup: [module load cuda/12.4, source ~/venv/bin/activate]\n"
                    "sbatch_extra: {constraint: a100, exclusive: true, gres-flags: enforce-binding}\n")
    c = clusters.load_cluster(str(path))
    assert c.setup == ["module load cuda/12.4", "source ~/venv/bin/activate"]
    assert c.sbatch_extra == {"constraint": "a100", "exclusive": True, "gres-flags": "enforce-binding"}


@pytest.mark.slow
def test_unknown_partition_and_gpus_caught_by_sinfo(tmp_path, capsys, ci_sweeps, slurm_cluster, monkeypatch):
    from reproduce.backends import clusters
    from reproduce.backends.slurm import check_against_slurm
    cdir = tmp_path / "clusters"
    cdir.mkdir()
    (cdir / "bad.yaml").write_text("partition: nosuchpartition\n")
    (cdir / "gpus.yaml").write_text("partition: debug\ngpus_per_node: 8\n")
    monkeypatch.setattr(clusters, "CLUSTER_DIR", cdir)
    with pytest.raises(Exception) as info:
        check_against_slurm(clusters.load_cluster("bad", cdir), 0)
    assert "partition 'nosuchpartition' does not exist" in str(info.value) and "debug" in str(info.value)
    with pytest.raises(Exception) as info:
        check_against_slurm(clusters.load_cluster("gpus", cdir), 8)
    assert "need 8 GPUs" in str(info.value)


# ---- a checkpoint the storage will not read -----------------------------------------------------------------
def _checkpoint(path):
    import torch
    torch.save({"state_dict": {}, "meta": {"iter": int(path.stem.split("_")[1])}}, path)


def test_checkpoint_io_error_is_not_read_as_corruption(tmp_path, monkeypatch):
    """Issue 11, item 7: an I/O error (here the path is a directory: open() fails
    with an OSError, as on an NFS hiccup) is retried, then fails the attempt;
    nothing is renamed and training does not fall back to an older checkpoint."""
    import musu.train as train
    monkeypatch.setattr(train, "IO_WAIT_S", 0.01)
    _checkpoint(tmp_path / "iter_2.pth")
    (tmp_path / "iter_4.pth").mkdir()
    with pytest.raises(train.CheckpointIOError, match="left in place"):
        train.ensure_resumable(tmp_path)
    assert (tmp_path / "iter_4.pth").is_dir() and not list(tmp_path.glob("*.corrupt"))
    # A truncated file is still set aside, and the previous one used.
    (tmp_path / "iter_4.pth").rmdir()
    _checkpoint(tmp_path / "iter_4.pth")
    data = (tmp_path / "iter_4.pth").read_bytes()
    (tmp_path / "iter_4.pth").write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert train.ensure_resumable(tmp_path) == tmp_path / "iter_2.pth"
    assert (tmp_path / "iter_4.pth.corrupt").exists()


def test_a_storage_failure_reads_killed_and_is_resubmitted():
    from reproduce.backends import JobState
    from reproduce.sweep.status import State, classify
    from reproduce.tracking import Attempt, Tracked
    latest = Attempt("r", "FAILED", "40/100", "storage", "musu.train.CheckpointIOError: checkpoint x could not be read")
    st = classify(Tracked(None, latest), JobState("7", "SLURM job 7", "ended", "failed", result="error"), "0")
    assert st.state == State.KILLED and "could not read its checkpoint" in st.detail


# ---- configs are code: only the places a user named ----------------------------------------------------------
def _evil_config(folder, marker):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mine.py"
    path.write_text(f"_base_ = ['mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py']\n"
                    f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    return path


@pytest.mark.parametrize("how", ["absolute", "dotdot"])
def test_a_profile_cannot_make_plan_execute_any_file(tmp_path, capsys, ci_sweeps, how):
    """Issue 11, item 10: a profile naming a Python file outside the suite's
    configs, by absolute path or by '..', is refused on one line; it never runs."""
    marker = tmp_path / "executed"
    evil = _evil_config(tmp_path / "elsewhere", marker)
    from musu.configs import CONFIG_DIR
    name = str(evil) if how == "absolute" else os.path.relpath(evil, CONFIG_DIR)
    profile = ci_sweeps / "profiles" / "ci.yaml"
    profile.write_text(profile.read_text().replace("smoke/musu_tiny_synthetic", name))
    code, err = _run(capsys, "plan", "one", "--profile", "ci", "--sweeps", str(ci_sweeps))
    assert code == 2 and err.count("\n") == 1 and "outside the configs the suite may execute" in err, err
    assert "ci.yaml" in err and "--configs DIR" in err
    assert not marker.exists(), "the file was executed"


def test_configs_dir_named_by_the_user_is_allowed_and_a_broken_config_is_one_line(tmp_path, capsys, ci_sweeps):
    marker = tmp_path / "executed"
    _evil_config(tmp_path / "mine", marker)
    profile = ci_sweeps / "profiles" / "ci.yaml"
    profile.write_text(profile.read_text().replace("smoke/musu_tiny_synthetic", "mine"))
    common = ["--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir", str(tmp_path)]
    code, err = _run(capsys, "plan", "one", *common[:4], "--configs", str(tmp_path / "mine"))
    assert code == 0, err
    assert marker.exists()  # named explicitly: its user's choice
    (tmp_path / "mine" / "mine.py").write_text("model = dict(\n")
    code, err = _run(capsys, "plan", "one", *common[:4], "--configs", str(tmp_path / "mine"))
    assert code == 2 and err.count("\n") == 1 and "config mine" in err and "does not parse" in err, err
    assert "ci.yaml" in err and "Traceback" not in err


class _NotAllowlisted:
    """A type torch.load(weights_only=True) refuses, as a library upgrade can make it refuse one."""


def test_a_whole_checkpoint_the_loader_refuses_is_kept_and_fails_the_attempt(tmp_path):
    """Issue 24, item 3: any load error set every iter_*.pth aside as corrupt and training
    restarted from iteration 0. Only a damaged file (a broken or truncated archive) is."""
    import torch

    from musu.train import CheckpointRefused, ensure_resumable
    good = {"state_dict": {"w": torch.zeros(2)}, "meta": {"iter": 2}}
    torch.save(good, tmp_path / "iter_2.pth")
    torch.save({**good, "meta": {"iter": 4, "extra": _NotAllowlisted()}}, tmp_path / "iter_4.pth")
    with pytest.raises(CheckpointRefused, match="iter_4.pth is whole but does not load"):
        ensure_resumable(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_2.pth", "iter_4.pth"], "nothing set aside"
    # a truncated one is damage: set aside, and the previous one resumes
    data = (tmp_path / "iter_2.pth").read_bytes()
    (tmp_path / "iter_4.pth").write_bytes(data[: len(data) // 2])
    assert ensure_resumable(tmp_path) == tmp_path / "iter_2.pth"
    assert (tmp_path / "iter_4.pth.corrupt").is_file()
