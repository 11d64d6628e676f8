"""The callable a backend hands submitit: the node's ``run_training``, made
requeueable. submitit is the backends' business: the node side learns from
here only which signal requeues it and which exception means "interrupted"."""
from __future__ import annotations

import signal

import submitit

from reproduce.node.payload import Payload


def requeue_signal() -> int:
    """The signal submitit requeues on (USR2 unless its environment says otherwise)."""
    try:
        return submitit.JobEnvironment._usr_sig()
    except Exception:  # noqa: BLE001 - an unknown name in submitit's variable: its default
        return signal.SIGUSR2


class TrainJob(submitit.helpers.Checkpointable):
    """``TrainJob()(payload)``: when SLURM preempts the job or its time limit nears, submitit
    calls ``checkpoint`` and requeues the same call; the next attempt resumes from the work
    dir's last mmengine checkpoint and continues the *same* MLflow run."""

    def __call__(self, payload: Payload) -> dict:
        from reproduce.node.job import run_training
        # submitit ends a job it requeues or gives up on with UncompletedJobError: an interruption
        return run_training(payload, requeue_signal=requeue_signal(),
                            interruptions=(submitit.core.utils.UncompletedJobError,))

    def checkpoint(self, payload: Payload) -> submitit.helpers.DelayedSubmission:
        # mmengine saves checkpoints every `checkpoint_interval` iterations; the
        # requeued call resumes from the last of them (see run_training).
        return submitit.helpers.DelayedSubmission(type(self)(), payload)
