"""The requeue signal saves the iteration in flight (reproduce.node.save_on_signal):
a time-limited attempt keeps what it trained instead of falling back to the
last periodic checkpoint; during evaluation the signal goes straight through."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, time
    from pathlib import Path
    from mmengine.hooks import Hook
    from musu.train import load_config, make_runner, set_data_root
    from reproduce.node.save_on_signal import SaveOnSignalHook

    data, work, when = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    VAL_SEEN = []

    def submitit_like(signum, frame):  # what submitit's handler does last: exit for the requeue
        runner = RUNNER
        with open(work / "calls", "a") as fh:
            fh.write("requeue\\n")
        (work / "requeued.json").write_text(json.dumps(dict(
            iter=runner.iter, files=sorted(p.name for p in work.glob("iter_*.pth")),
            last=Path((work / "last_checkpoint").read_text().strip()).name
            if (work / "last_checkpoint").exists() else None,
            val_seen=len(VAL_SEEN), calls=(work / "calls").read_text().count("requeue"),
            alarm_left=signal.alarm(0), alarm_handler_back=signal.getsignal(signal.SIGALRM) == signal.SIG_DFL)))
        sys.exit(3)

    signal.signal(signal.SIGUSR2, submitit_like)

    class Sender(Hook):
        priority = "LOWEST"  # registered after SaveOnSignalHook: runs after it at each point
        def before_train(self, runner):
            if when == "twice":  # a second signal while the first one's checkpoint is being written
                save = runner.save_checkpoint
                def save_after_a_second_signal(*args, **kwargs):
                    os.kill(os.getpid(), signal.SIGUSR2)
                    return save(*args, **kwargs)
                runner.save_checkpoint = save_after_a_second_signal
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if when in ("iter", "twice") and runner.iter == 5:
                os.kill(os.getpid(), signal.SIGUSR2)  # arrives in the middle of iteration 6
            if when == "hang" and runner.iter == 5:
                os.kill(os.getpid(), signal.SIGUSR2)
                time.sleep(60)  # an iteration that does not end (a hung collective)
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if when == "between" and runner.iter == 3:  # after iteration 4's end, before its evaluation
                os.kill(os.getpid(), signal.SIGUSR2)
        def before_val_iter(self, runner, batch_idx, data_batch=None):
            VAL_SEEN.append(batch_idx)
            if when == "val" or (when == "mideval" and runner.iter == 4 and batch_idx == 0):
                os.kill(os.getpid(), signal.SIGUSR2)

    val_interval = 4 if when in ("between", "mideval") else 8
    cfg = load_config("smoke/musu_tiny_synthetic", {
        "train_cfg.max_iters": 8, "train_cfg.val_interval": val_interval, "default_hooks.checkpoint.interval": 100,
        "default_hooks.logger.interval": 1, "train_dataloader.batch_size": 2})
    set_data_root(cfg, data)
    RUNNER, _ = make_runner(cfg, work, resume=False)
    RUNNER.register_hook(SaveOnSignalHook(signal.SIGUSR2, grace_s=2 if when == "hang" else 30))
    RUNNER.register_hook(Sender())
    RUNNER.train()
""")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from musu.data import SyntheticSpec, generate
    return generate(tmp_path_factory.mktemp("syn"), SyntheticSpec(num_train=8, num_val=2, image_size=96,
                                                                  min_size=16, max_size=48, seed=0))


def _train_and_signal(data, work, when):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(data), str(work), when], capture_output=True,
                         text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert out.returncode == 3, out.stderr[-3000:]
    return json.loads((work / "requeued.json").read_text()), out.stderr


def test_requeue_signal_in_an_iteration_saves_that_iteration_first(data, tmp_path):
    seen, log = _train_and_signal(data, tmp_path / "w", "iter")
    # The periodic interval (100) never came: the only checkpoint is the one the signal asked for,
    # of the iteration in flight, and mmengine resumes from it.
    assert {k: seen[k] for k in ("iter", "files", "last")} == {"iter": 5, "files": ["iter_6.pth"],
                                                                "last": "iter_6.pth"}, (seen, log[-2000:])
    from musu.train import ensure_resumable
    assert ensure_resumable(tmp_path / "w").name == "iter_6.pth"


def test_requeue_signal_during_evaluation_goes_straight_to_submitit(data, tmp_path):
    seen, log = _train_and_signal(data, tmp_path / "w", "val")
    assert seen["files"] == ["iter_8.pth"] and seen["last"] == "iter_8.pth", (seen, log[-2000:])


def _saved_iter(path) -> int:
    import torch
    return int(torch.load(path, map_location="cpu", weights_only=False)["meta"]["iter"])


def test_a_second_signal_during_the_save_requeues_once_and_leaves_no_timer(data, tmp_path):
    """Issue 24, item 4: a second signal while the first one's checkpoint is written re-armed the
    grace timer, which could fire inside the job's last MLflow calls and requeue a second time."""
    seen, log = _train_and_signal(data, tmp_path / "w", "twice")
    assert seen["files"] == ["iter_6.pth"] and seen["calls"] == 1, (seen, log[-2000:])
    assert seen["alarm_left"] == 0 and seen["alarm_handler_back"], seen


def test_the_grace_timeout_requeues_a_hung_iteration_and_restores_the_alarm(data, tmp_path):
    """Issue 24, item 4: an iteration that does not end within the grace time requeues from the
    last checkpoint (none here), once, with SIGALRM's handler put back."""
    seen, log = _train_and_signal(data, tmp_path / "w", "hang")
    assert seen["files"] == [] and seen["calls"] == 1 and seen["iter"] == 5, (seen, log[-2000:])
    assert seen["alarm_left"] == 0 and seen["alarm_handler_back"], seen
    assert "did not end within 2 s" in log


def test_a_signal_before_a_mid_training_evaluation_saves_first(data, tmp_path):
    """Issue 24, item 4: a signal after an iteration's end and before the evaluation that follows
    it was held through the evaluation, and the job requeued without saving those iterations.
    Now they are saved at once and the job requeues without evaluating."""
    seen, log = _train_and_signal(data, tmp_path / "w", "between")
    assert seen["files"] == ["iter_4.pth"] and seen["last"] == "iter_4.pth", (seen, log[-2000:])
    assert seen["val_seen"] == 0 and seen["calls"] == 1
    assert _saved_iter(tmp_path / "w" / "iter_4.pth") == 4  # resumes at iteration 5


def test_a_signal_during_a_mid_training_evaluation_saves_the_iterations_trained(data, tmp_path):
    """Issue 24, item 4: during an evaluation that training continues after, the signal went
    straight to submitit, losing every iteration since the last periodic checkpoint."""
    seen, log = _train_and_signal(data, tmp_path / "w", "mideval")
    assert seen["files"] == ["iter_4.pth"] and seen["last"] == "iter_4.pth", (seen, log[-2000:])
    assert seen["calls"] == 1 and seen["alarm_left"] == 0
    assert _saved_iter(tmp_path / "w" / "iter_4.pth") == 4
    from musu.train import ensure_resumable
    assert ensure_resumable(tmp_path / "w").name == "iter_4.pth"

