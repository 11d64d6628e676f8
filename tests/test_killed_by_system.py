"""Which ended jobs `run` submits again: those the system killed (a dead
node, a step SLURM killed while the node recovered, a cancel by slurmctld),
never those that failed in their own code or that their user cancelled."""
from __future__ import annotations

import os
import pickle

import pytest

from reproduce.commands import killed_by_system


def record(tmp_path, outcome=None):
    folder = tmp_path / "submitit"
    folder.mkdir(exist_ok=True)
    if outcome is not None:
        with open(folder / "42_0_result.pkl", "wb") as fh:
            pickle.dump((outcome, "Traceback ..." if outcome == "error" else {"AP": 1.0}), fh)
    return dict(backend="slurm", job_id="42", folder=str(folder))


@pytest.mark.parametrize("end_state", ["node_fail", "boot_fail", "preempted", "cancelled"])
def test_system_ends_are_resubmitted(tmp_path, end_state):
    assert killed_by_system(record(tmp_path), end_state, own_error=False)


def test_step_killed_without_a_word_is_the_systems(tmp_path):
    # The CI failure: the requeued job's step was killed while the node
    # recovered; the job ended FAILED, leaving no result and no MLflow error.
    assert "killed" in killed_by_system(record(tmp_path), "failed", own_error=False)


def test_a_local_process_killed_from_outside_is_the_systems(tmp_path):
    assert killed_by_system(record(tmp_path), "ended", own_error=False)


@pytest.mark.parametrize("end_state", ["failed", "ended"])
def test_an_error_of_its_own_is_a_failure(tmp_path, end_state):
    assert killed_by_system(record(tmp_path, "error"), end_state, own_error=False) == ""
    assert killed_by_system(record(tmp_path), end_state, own_error=True) == ""


def test_a_users_cancel_is_a_failure(tmp_path):
    assert killed_by_system(record(tmp_path), f"cancelled by {os.getuid()}", own_error=False) == ""


@pytest.mark.parametrize("end_state", ["timeout", "out_of_memory", "completed"])
def test_ends_the_run_itself_caused_are_failures(tmp_path, end_state):
    assert killed_by_system(record(tmp_path), end_state, own_error=False) == ""
