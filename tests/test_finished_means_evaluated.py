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


def test_a_detector_that_finds_nothing_is_evaluated_at_ap_zero(tmp_path):
    """mmdet's CocoMetric returns no metrics at all when no box passes the score threshold on the
    whole split; that evaluation has a result, COCO's for an empty detection list, not 'never
    evaluated' (a tiny run would otherwise fail, or be evaluated twice)."""
    from types import SimpleNamespace

    from mmdet.evaluation import CocoMetric
    from musu.data import SyntheticSpec, generate
    from musu.train import MetricsCapture
    generate(tmp_path, SyntheticSpec(num_train=2, num_val=3, image_size=64, min_size=16, max_size=30, seed=0))
    ann = str(tmp_path / "annotations" / "val.json")
    metric = CocoMetric(ann_file=ann, metric="bbox")
    metric.dataset_meta = {"classes": [c["name"] for c in json.loads(open(ann).read())["categories"]]}
    import numpy as np
    images = json.loads(open(ann).read())["images"]
    nothing = [(dict(img_id=im["id"], width=im["width"], height=im["height"], anns=[]),
                dict(img_id=im["id"], bboxes=np.zeros((0, 4)), scores=np.zeros(0), labels=np.zeros(0, dtype=int)))
               for im in images]
    metric.outfile_prefix = str(tmp_path / "coco")
    assert metric.compute_metrics(nothing) == {}, "mmdet still returns nothing for an empty result"
    capture = MetricsCapture()
    capture.after_val_epoch(SimpleNamespace(val_evaluator=SimpleNamespace(metrics=[metric])), {})
    assert capture.evaluated and capture.metrics["coco/bbox_mAP"] == 0.0 and capture.metrics["coco/bbox_mAP_50"] == 0.0
    assert set(capture.metrics) == {f"coco/bbox_mAP{s}" for s in ("", "_50", "_75", "_s", "_m", "_l")}
    # an area range without objects reads -1, as COCO gives it (the job leaves those out)
    assert capture.metrics["coco/bbox_mAP_l"] == -1.0
    # metrics that were logged are kept as they are; a test-dev evaluator (files only) adds nothing
    capture.after_val_epoch(SimpleNamespace(val_evaluator=SimpleNamespace(metrics=[metric])), {"coco/bbox_mAP": 0.25})
    assert capture.metrics == {"coco/bbox_mAP": 0.25}
    metric.format_only = True
    capture.after_val_epoch(SimpleNamespace(val_evaluator=SimpleNamespace(metrics=[metric])), {})
    assert capture.evaluated and capture.metrics == {}
