"""Issue 11, item 4: two `reproduce run` started together in a new work dir,
their tables sharing a row: both succeed (a new SQLite store's first use
included) and the shared row is submitted and trained once."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_reproduce_run import mlflow_runs, planned_hashes

pytestmark = pytest.mark.slow
REPRODUCE = [sys.executable, "-m", "reproduce.cli"]

TWO = """\
table: two
title: the row of `one` and another
columns: [AP]
defaults: {method: musu, backbone: r50, schedule: 1x}
rows:
  - {name: musu, label: MuSu}
  - {name: hard, label: hard, set: {hard: true}}
"""


def test_two_runs_sharing_a_row_start_together(tmp_path):
    from conftest import make_sweeps
    sweeps = make_sweeps(tmp_path / "spec", iters=8, ckpt=4)
    (sweeps / "two.yaml").write_text(TWO)
    work = tmp_path / "w"
    work.mkdir()
    shared = planned_hashes(tmp_path, sweeps, "one")
    assert shared <= planned_hashes(tmp_path, sweeps, "two") and len(planned_hashes(tmp_path, sweeps, "two")) == 2
    procs = [subprocess.Popen([*REPRODUCE, "run", table, "--profile", "ci", "--sweeps", str(sweeps), "--workdir",
                               str(work), "--poll", "1"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL) for table in ("one", "two")]
    outs = [p.communicate(timeout=1200) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    errs = [err for _, err in outs]
    submitted = sum(line.startswith("submitted ") for err in errs for line in err.splitlines())
    assert submitted == 2, errs  # the shared row once, the other row once
    assert any("already submitted (reattaching)" in err and "1 already submitted" in err for err in errs), errs
    runs, cl = mlflow_runs(work)
    by_hash = {}
    for r in runs:
        by_hash.setdefault(r.data.tags["musu.config_hash"], []).append(r)
    assert all(len(v) == 1 for v in by_hash.values()) and len(by_hash) == 2, {k: len(v) for k, v in by_hash.items()}
    records = json.loads((work / ".reproduce" / "state" / "jobs.json").read_text())
    assert len(records) == 2 and not any(r.get("earlier") for r in records.values())
