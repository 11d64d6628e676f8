"""benchmarks/gpu_check.sh is run on a lent GPU machine, rarely and under a time
limit: its every step is run here first, on CPU at toy sizes, so a typo or a
wrong flag never costs that machine's minutes."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_gpu_check_script_runs_every_step_on_cpu(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)], cwd=ROOT,
                          env={**os.environ, "GPU_CHECK_DEVICE": "cpu"}, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = (out / "summary.txt").read_text()
    for step in ("reproduce check", "assignment benchmark", "training-step benchmark", "inference (FPS)",
                 "candidate cap scaled by #A", "MuSu R-50 on the synthetic set", "done, 0 failed"):
        assert step in summary, summary
    assert "checks passed" in (out / "check.txt").read_text()
    (row,) = json.loads((out / "status.json").read_text())
    assert row["state"] == "finished", row
    assert "| MuSu R-50 |" in (out / "report.md").read_text()
    assert "| 5 | 5000 (per-anchor) |" in (out / "nms_pre.txt").read_text()
    assert "candidates per level before NMS: 1000 x #A" in (out / "inference_nms_pre.txt").read_text()
