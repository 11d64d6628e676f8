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
    import json, os, signal, sys
    from pathlib import Path
    from mmengine.hooks import Hook
    from musu.train import load_config, make_runner, set_data_root
    from reproduce.node.save_on_signal import SaveOnSignalHook

    data, work, when = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

    def submitit_like(signum, frame):  # what submitit's handler does last: exit for the requeue
        runner = RUNNER
        (work / "requeued.json").write_text(json.dumps(dict(
            iter=runner.iter, files=sorted(p.name for p in work.glob("iter_*.pth")),
            last=Path((work / "last_checkpoint").read_text().strip()).name
            if (work / "last_checkpoint").exists() else None)))
        sys.exit(3)

    signal.signal(signal.SIGUSR2, submitit_like)

    class Sender(Hook):
        priority = "LOWEST"
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if when == "iter" and runner.iter == 5:
                os.kill(os.getpid(), signal.SIGUSR2)  # arrives in the middle of iteration 6
        def before_val_iter(self, runner, batch_idx, data_batch=None):
            if when == "val":
                os.kill(os.getpid(), signal.SIGUSR2)

    cfg = load_config("smoke/musu_tiny_synthetic", {
        "train_cfg.max_iters": 8, "train_cfg.val_interval": 8, "default_hooks.checkpoint.interval": 100,
        "default_hooks.logger.interval": 1, "train_dataloader.batch_size": 2})
    set_data_root(cfg, data)
    RUNNER, _ = make_runner(cfg, work, resume=False)
    RUNNER.register_hook(SaveOnSignalHook(signal.SIGUSR2, grace_s=30))
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
    assert seen == {"iter": 5, "files": ["iter_6.pth"], "last": "iter_6.pth"}, (seen, log[-2000:])
    from musu.train import ensure_resumable
    assert ensure_resumable(tmp_path / "w").name == "iter_6.pth"


def test_requeue_signal_during_evaluation_goes_straight_to_submitit(data, tmp_path):
    seen, log = _train_and_signal(data, tmp_path / "w", "val")
    assert seen["files"] == ["iter_8.pth"] and seen["last"] == "iter_8.pth", (seen, log[-2000:])
