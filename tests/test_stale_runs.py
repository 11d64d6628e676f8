"""Issue 11, item 3 (the code left out of a run's identity): a finished run
trained with other code is flagged stale by `status` and the reports, and
`run --rerun-stale` trains it again, in a new MLflow run, the old one kept."""
from __future__ import annotations

import json

import pytest

from reproduce import tracking
from reproduce.node.fingerprint import code_fingerprint
from test_reproduce_run import mlflow_runs, reproduce

pytestmark = pytest.mark.slow


def test_a_run_trained_with_older_code_is_stale_and_rerun_on_request(tmp_path):
    from conftest import make_sweeps
    sweeps = make_sweeps(tmp_path, iters=8, ckpt=4)
    reproduce(tmp_path, sweeps, "run", "one", "--poll", "1")
    (first,), cl = mlflow_runs(tmp_path)
    assert first.data.tags[tracking.TAG_CODE] == code_fingerprint()
    (row,) = json.loads(reproduce(tmp_path, sweeps, "status", "one", "--json").stdout)
    assert row["state"] == "finished" and row["stale"] is False
    # As a run trained before a fix in musu/ would read.
    cl.set_tag(first.info.run_id, tracking.TAG_CODE, "0123456789ab")
    (row,) = json.loads(reproduce(tmp_path, sweeps, "status", "one", "--json").stdout)
    assert row["state"] == "finished" and row["stale"] is True and "--rerun-stale" in row["detail"], row
    md = reproduce(tmp_path, sweeps, "report", "one", "--format", "md").stdout
    assert "| MuSu (stale) |" in md, md
    plain = reproduce(tmp_path, sweeps, "run", "one", "--poll", "1")
    assert "0 to submit" in plain.stderr and "trained with older code" in plain.stderr, plain.stderr
    again = reproduce(tmp_path, sweeps, "run", "one", "--poll", "1", "--rerun-stale")
    assert "1 to submit" in again.stderr and "1 stale, retrained" in again.stderr and "1/1 finished" in again.stderr, \
        again.stderr[-2000:]
    runs, _ = mlflow_runs(tmp_path)
    assert len(runs) == 2 and {r.data.tags[tracking.TAG_CODE] for r in runs} == {"0123456789ab", code_fingerprint()}
    (row,) = json.loads(reproduce(tmp_path, sweeps, "status", "one", "--json").stdout)
    assert row["state"] == "finished" and row["stale"] is False
    assert list((tmp_path / "work_dirs" / "ci").glob("*.stale-*")), "the stale run's checkpoints are kept aside"


def test_a_run_trained_on_annotations_changed_since_is_stale_and_rerun_on_request(tmp_path):
    """The annotations a run read are no part of its hash: a corrected annotation file
    makes the finished run stale, and `run --rerun-stale` trains it on the new file."""
    from conftest import make_sweeps
    sweeps = make_sweeps(tmp_path, iters=8, ckpt=4)
    reproduce(tmp_path, sweeps, "run", "one", "--poll", "1")
    (first,), cl = mlflow_runs(tmp_path)
    recorded = first.data.tags[tracking.TAG_DATA]
    (row,) = json.loads(reproduce(tmp_path, sweeps, "status", "one", "--json").stdout)
    assert row["state"] == "finished" and row["stale"] is False
    ann = tmp_path / "data" / "synthetic-ci" / "annotations" / "train.json"
    data = json.loads(ann.read_text())
    data["annotations"].pop()  # a box removed from the training set, under the same file name
    ann.write_text(json.dumps(data))
    (row,) = json.loads(reproduce(tmp_path, sweeps, "status", "one", "--json").stdout)
    assert row["state"] == "finished" and row["stale"] is True, row
    assert f"trained on annotations {recorded}, now " in row["detail"], row
    again = reproduce(tmp_path, sweeps, "run", "one", "--poll", "1", "--rerun-stale")
    assert "1 stale, retrained" in again.stderr and "1/1 finished" in again.stderr, again.stderr[-2000:]
    runs, _ = mlflow_runs(tmp_path)
    assert len(runs) == 2 and len({r.data.tags[tracking.TAG_DATA] for r in runs}) == 2
    (row,) = json.loads(reproduce(tmp_path, sweeps, "status", "one", "--json").stdout)
    assert row["state"] == "finished" and row["stale"] is False
