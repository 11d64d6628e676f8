"""Issue 11, item 1 (FINISHED without AP): a run resumed from the checkpoint at
max_iters, with its evaluation never logged, evaluates before it may finish."""
from __future__ import annotations

import json
import math

import pytest

from test_reproduce_run import mlflow_runs, reproduce

pytestmark = pytest.mark.slow


def test_resumed_past_training_evaluates_before_it_finishes(tmp_path):
    from conftest import make_sweeps
    sweeps = make_sweeps(tmp_path, iters=8, ckpt=4)
    reproduce(tmp_path, sweeps, "run", "one", "--poll", "1")
    (first,), _ = mlflow_runs(tmp_path)
    # The work dir keeps iter_8.pth; the store that held the evaluation is gone
    # (the same state as a job stopped after the last checkpoint, during its evaluation).
    (tmp_path / "mlruns.db").rename(tmp_path / "mlruns-before.db")
    out = reproduce(tmp_path, sweeps, "run", "one", "--poll", "1")
    assert "1/1 finished" in out.stderr and "AP nan" not in out.stderr, out.stderr[-2000:]
    # Read through the CLI: this process's MLflow client still holds the renamed file open.
    report = json.loads(reproduce(tmp_path, sweeps, "report", "one", "--format", "json").stdout)
    (row,) = report[0]["rows"]
    ap = row["cells"]["AP"]["reproduced"]
    assert row["status"] == "finished" and ap is not None and not math.isnan(ap), row
    # The same weights, evaluated again: the same number.
    assert ap == pytest.approx(first.data.metrics["AP"])
    assert "n/a" not in reproduce(tmp_path, sweeps, "report", "one", "--format", "md").stdout
