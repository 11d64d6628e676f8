"""Issue 13, item 2: the paper's orderings judged over seeds (reproduce/report/orderings.py)."""
import json

import pytest

from reproduce.report import orderings as od
from reproduce.cli import main


def test_welch_decides_each_direction_and_says_when_it_cannot():
    # t = 5 / sqrt(1/3 + 1/3) = 6.12 on 4 degrees of freedom: one-sided p = 0.0018
    verdict, p = od.judge([10.0, 11.0, 12.0], [5.0, 6.0, 7.0])
    assert verdict == od.HOLDS and p == pytest.approx(0.0018, abs=2e-4)
    assert od.judge([5.0, 6.0, 7.0], [10.0, 11.0, 12.0])[0] == od.FAILS
    verdict, p = od.judge([10.0, 11.0, 12.0], [10.5, 11.0, 11.6])
    assert verdict == od.NOISE and p > 0.4
    assert od.judge([10.0], [5.0, 6.0]) == (od.UNMEASURED, None)  # no spread on one side
    assert od.judge([2.0, 2.0], [1.0, 1.0])[0] == od.HOLDS       # no spread at all, yet apart


def test_every_ordering_names_rows_and_a_column_of_the_suite():
    from reproduce.sweep.spec import load_tables
    tables = {t.name: t for t in load_tables("all")}
    assert len(od.orderings()) >= 4
    for o in od.orderings():
        for table, row in (o.higher, o.lower):
            assert row in [r.name for r in tables[table].rows], (o.claim, table, row)
            assert o.metric in tables[table].columns, (o.claim, table, o.metric)


def test_a_bad_orderings_file_is_one_line(tmp_path):
    from reproduce.errors import UserError
    path = tmp_path / "orderings.yaml"
    path.write_text("- {claim: c, evidence: e, metric: AP, higher: table1, lower: table1/fcos}\n")
    with pytest.raises(UserError, match="expected TABLE/ROW"):
        od.orderings(path)
    path.write_text("- {claim: c, evidence: e, metric: mAP, higher: table1/v-q, lower: table1/fcos}\n")
    with pytest.raises(UserError, match="unknown metric 'mAP'"):
        od.orderings(path)


def test_the_orderings_document_of_the_signal_profile(tmp_path, capsys):
    """Seeds written to a real store as finished runs; the report judges each ordering
    whose rows the profile trains, and says so when a side has too few seeds."""
    from reproduce import tracking
    from reproduce.node.fingerprint import code_fingerprint, library_versions
    common = ["--profile", "signal", "--workdir", str(tmp_path)]
    assert main(["plan", "all", "--profile", "signal", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]

    def seeds(row):
        return sorted((r for r in runs if row in [tuple(x) for x in r["rows"]]), key=lambda r: r["seed"])

    values = {  # AP, rho per seed; FCOS's rho on one seed only
        ("table1", "alpha-1/3"): [(10.0, 0.50), (11.0, 0.52), (12.0, 0.54)],
        ("table1", "fcos"): [(5.0, 0.30), (6.0, None), (7.0, None)],
        ("table1", "v-q"): [(13.0, 0.6), (14.0, 0.6), (15.0, 0.6)],
        ("soft_hard", "hard"): [(10.5, 0.5), (11.0, 0.5), (11.6, 0.5)],
    }
    cl = tracking.client(tracking.check(f"sqlite:///{tmp_path / 'mlruns.db'}"))
    exp = tracking.Tracker(cl.tracking_uri).experiment("signal")
    for row, per_seed in values.items():
        for run, (ap, rho) in zip(seeds(row), per_seed):
            r = cl.create_run(exp, tags={tracking.TAG_HASH: run["config_hash"], tracking.TAG_CODE: code_fingerprint(),
                                     tracking.TAG_LIBS: library_versions()})
            cl.log_metric(r.info.run_id, "AP", ap)
            if rho is not None:
                cl.log_metric(r.info.run_id, "rho", rho)
            cl.set_terminated(r.info.run_id, "FINISHED")
    out = tmp_path / "reports"
    assert main(["report", "all", *common, "--format", "orderings", "-o", str(out)]) == 0
    doc = (out / "orderings.md").read_text()
    lines = {line.split(" | ")[0].lstrip("| "): line for line in doc.splitlines() if line.startswith("| ")}
    assert "**holds**" in lines["MuSu is more accurate than FCOS"]
    assert "`table1/alpha-1/3`: 11.0 ± 1.0 (3/3) | `table1/fcos`: 6.0 ± 1.0 (3/3)" in lines["MuSu is more accurate than FCOS"]
    assert "+5.0" in lines["MuSu is more accurate than FCOS"]
    assert "**does not hold**" in lines["the mutual criteria (Eq. 3) beat v = q (both heads weighted by IoU alone)"]
    assert "**within noise**" in lines["soft targets (Eq. 4) beat hard ones"]
    consistency = lines["MuSu's heads are more consistent than FCOS's (confidence ranks an object's anchors as their IoU does)"]
    assert "**not measured** (fewer than two finished seeds on a side)" in consistency
    assert "`table1/fcos`: 0.300 (1/3)" in consistency
    assert "1 holds, 1 does not hold, 1 within noise, 3 not measured." in doc
    # the paper alone has no seeds to judge
    assert main(["report", "all", *common, "--format", "orderings", "--paper"]) == 2
    assert "drop --paper" in capsys.readouterr().err
    # a table whose rows no ordering names
    assert main(["report", "table7", "--profile", "smoke", "--workdir", str(tmp_path), "--format", "orderings"]) == 2
    assert "none of the paper's orderings" in capsys.readouterr().err
