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
    """Defers submitit's requeue handler to the end of the current training iteration and saves first.

    One requeue per job, whatever comes: a second signal while the first is being saved is
    ignored; the grace timer is cancelled, and SIGALRM's and the requeue signal's handlers put
    back, on every way out (the save, the grace running out, training ending). A signal held
    when a mid-training evaluation begins, or one that comes during it, saves the iterations
    trained so far and requeues at once instead of waiting out the evaluation. That evaluation
    is not run again after the resume: its metrics (and a ``save_best`` choice) are progress,
    the run's numbers come from the final one.
    """

    priority = "LOWEST"  # after mmengine's CheckpointHook, whose file for this iteration is then reused

    def __init__(self, signum: int, grace_s: float = 60.0) -> None:
        self.grace_s = max(1.0, float(grace_s))
        self.signum = signum  # the backend's requeue signal (``backends.train_job.requeue_signal``)
        self.original = None       # submitit's handler, or None when it installed none (not a submitit job)
        self.deferring = False     # in the training iterations (data loading included), not evaluation
        self.mid_eval = False      # in an evaluation that training continues after
        self.pending = None        # (signum, frame) of a signal held until the iteration ends
        self.requeuing = False     # the one requeue is under way: later signals change nothing
        self.alarm_handler = None  # SIGALRM's handler before the grace timer was armed
        self.runner = None

    # --- installing -----------------------------------------------------------------
    def before_train(self, runner) -> None:
        original = signal.getsignal(self.signum)
        if not callable(original) or checkpoint_hook(runner) is None:
            return
        self.original, self.runner = original, runner
        self.deferring = True
        signal.signal(self.signum, self._on_signal)

    def after_train(self, runner) -> None:
        self._disarm()
        if self.original is not None:
            signal.signal(self.signum, self.original)

    # --- the signal -----------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if self.requeuing:
            return  # the first signal's save and requeue are under way
        if self.mid_eval:
            print(f"[reproduce] signal {signal.Signals(signum).name} during an evaluation: saving the "
                  f"{self.runner.iter} iterations trained, then requeueing", file=sys.stderr, flush=True)
            self._requeue(self.runner, self.runner.iter, (signum, frame))
            return
        if not self.deferring:
            self.requeuing = True
            self.original(signum, frame)
            return
        if self.pending is None:
            print(f"[reproduce] signal {signal.Signals(signum).name}: saving a checkpoint when this "
                  "iteration ends, then requeueing", file=sys.stderr, flush=True)
            self.pending = (signum, frame)
            # An iteration that never ends must not keep the job from requeueing.
            self.alarm_handler = signal.signal(signal.SIGALRM, self._on_grace_over)
            signal.alarm(int(self.grace_s))

    def _on_grace_over(self, signum, frame) -> None:
        print(f"[reproduce] the iteration did not end within {self.grace_s:.0f} s of the signal: requeueing "
              "from the last checkpoint", file=sys.stderr, flush=True)
        pending, self.pending = self.pending, None
        self.requeuing = True
        self._disarm()
        if pending is not None:
            self.original(*pending)

    def _disarm(self) -> None:
        """The grace timer off and SIGALRM's handler back, if they were set."""
        signal.alarm(0)
        if self.alarm_handler is not None:
            signal.signal(signal.SIGALRM, self.alarm_handler)
            self.alarm_handler = None

    def _requeue(self, runner, step: int, pending) -> None:
        """Save the state after ``step`` iterations, then hand the signal to submitit (once)."""
        self.requeuing = True
        self.pending = None
        self._disarm()
        try:
            self.save(runner, step)
        finally:
            self.original(*pending)  # submitit: pickle the call, requeue, exit

    # --- iteration boundaries -------------------------------------------------------
    def before_val_epoch(self, runner) -> None:
        self.deferring = False
        # An EMA hook has swapped its averaged weights in by now (its own before_val_epoch runs
        # first): a save here would store them in each other's place. With one, the signal goes
        # straight to submitit during an evaluation, as it did before (the last periodic checkpoint).
        self.mid_eval = self.original is not None and runner.iter < runner.max_iters and not _has_ema(runner)
        if self.pending is not None and self.mid_eval:
            # came after the last iteration's end, before this evaluation: save those now
            self._requeue(runner, runner.iter, self.pending)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.mid_eval = False
        self.deferring = self.original is not None and runner.iter < runner.max_iters

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 >= runner.max_iters:
            self.deferring = False  # what follows is the final evaluation
        if self.pending is None:
            return
        self._requeue(runner, runner.iter + 1, self.pending)

    def save(self, runner, step: int) -> None:
        """The state after ``step`` iterations, saved by mmengine's own CheckpointHook (its file name,
        its ``max_keep_ckpts`` and ``last_checkpoint`` bookkeeping), unless it just saved it. In the
        training loop the iteration in flight is ``runner.iter`` (``step`` is one more); in an
        evaluation ``runner.iter`` already counts the iterations trained (``step`` is that)."""
        hook = checkpoint_hook(runner)
        if hook is None or Path(hook.file_backend.join_path(hook.out_dir, hook.filename_tmpl.format(step))).is_file():
            return
        # the call its _save_checkpoint makes, with the step given (it assumes the training loop's)
        hook._save_checkpoint_with_step(runner, step, dict(epoch=runner.epoch, iter=step))  # noqa: SLF001
        print(f"[reproduce] saved the checkpoint of iteration {step} on the requeue signal",
              file=sys.stderr, flush=True)


def checkpoint_hook(runner):
    """The runner's iteration-based CheckpointHook, or None (an epoch-based one cannot save mid-epoch)."""
    from mmengine.hooks import CheckpointHook
    for hook in runner.hooks:
        if isinstance(hook, CheckpointHook) and not hook.by_epoch:
            return hook
    return None


def _has_ema(runner) -> bool:
    from mmengine.hooks import EMAHook
    return any(isinstance(hook, EMAHook) for hook in runner.hooks)

