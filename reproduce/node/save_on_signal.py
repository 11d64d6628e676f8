"""Save a checkpoint when the requeue signal comes, not only every N iterations.

submitit requeues a job on its signal (SLURM's time-limit warning, a
preemption notice) and the next attempt resumes from the last checkpoint.
With periodic checkpoints alone, everything trained since the last one is
trained again on every requeue: up to a whole checkpoint interval per attempt,
and on a short time limit an attempt can end having saved nothing new, so the
job requeues until it runs out of requeues. Here the signal is held until the
iteration in flight ends; then the checkpoint is written and submitit's own
handler requeues. Outside the training iterations (start-up, evaluation) the
signal goes straight to submitit. If the iteration does not end in time (a
hung collective), submitit's handler runs anyway, so the job still requeues.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

from mmengine.hooks import Hook


class SaveOnSignalHook(Hook):
    """Defers submitit's requeue handler to the end of the current training iteration and saves first."""

    priority = "LOWEST"  # after mmengine's CheckpointHook, whose file for this iteration is then reused

    def __init__(self, signum: int, grace_s: float = 60.0) -> None:
        self.grace_s = max(1.0, float(grace_s))
        self.signum = signum  # the backend's requeue signal (``backends.train_job.requeue_signal``)
        self.original = None       # submitit's handler, or None when it installed none (not a submitit job)
        self.deferring = False     # in the training iterations (data loading included), not evaluation
        self.pending = None        # (signum, frame) of a signal held until the iteration ends

    # --- installing -----------------------------------------------------------------
    def before_train(self, runner) -> None:
        original = signal.getsignal(self.signum)
        if not callable(original) or checkpoint_hook(runner) is None:
            return
        self.original = original
        self.deferring = True
        signal.signal(self.signum, self._on_signal)

    def after_train(self, runner) -> None:
        if self.original is not None:
            signal.signal(self.signum, self.original)

    # --- the signal -----------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if not self.deferring:
            self.original(signum, frame)
            return
        if self.pending is None:
            print(f"[reproduce] signal {signal.Signals(signum).name}: saving a checkpoint when this "
                  "iteration ends, then requeueing", file=sys.stderr, flush=True)
            self.pending = (signum, frame)
            # An iteration that never ends must not keep the job from requeueing.
            signal.signal(signal.SIGALRM, self._on_grace_over)
            signal.alarm(int(self.grace_s))

    def _on_grace_over(self, signum, frame) -> None:
        print(f"[reproduce] the iteration did not end within {self.grace_s:.0f} s of the signal: requeueing "
              "from the last checkpoint", file=sys.stderr, flush=True)
        pending, self.pending = self.pending, None
        if pending is not None:
            self.original(*pending)

    # --- iteration boundaries -------------------------------------------------------
    def before_val_epoch(self, runner) -> None:
        self.deferring = False

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.deferring = self.original is not None and runner.iter < runner.max_iters

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 >= runner.max_iters:
            self.deferring = False  # what follows is the final evaluation
        if self.pending is None:
            return
        signal.alarm(0)
        pending, self.pending = self.pending, None
        try:
            self.save(runner)
        finally:
            self.original(*pending)  # submitit: pickle the call, requeue, exit

    def save(self, runner) -> None:
        """The state after this iteration, saved by mmengine's own CheckpointHook (its file name,
        its ``max_keep_ckpts`` and ``last_checkpoint`` bookkeeping), unless it just saved it."""
        step = runner.iter + 1
        name = f"iter_{step}.pth"
        if (Path(runner.work_dir) / name).is_file():
            return
        hook = checkpoint_hook(runner)
        if hook is None:
            return
        hook._save_checkpoint(runner)  # noqa: SLF001 - the same call its after_train_iter makes
        print(f"[reproduce] saved the checkpoint of iteration {step} on the requeue signal",
              file=sys.stderr, flush=True)


def checkpoint_hook(runner):
    """The runner's iteration-based CheckpointHook, or None (an epoch-based one cannot save mid-epoch)."""
    from mmengine.hooks import CheckpointHook
    for hook in runner.hooks:
        if isinstance(hook, CheckpointHook) and not hook.by_epoch:
            return hook
    return None
