"""Issue 13, item 2: the paper's orderings judged over seeds (reproduce/report/orderings.py)."""
import json

import pytest

from reproduce.report import orderings as od
from reproduce.cli import main


def test_welch_gives_the_effect_its_interval_and_a_two_sided_p():
    # t = 5 / sqrt(1/3 + 1/3) = 6.12 on 4 degrees of freedom: two-sided p = 0.0036,
    # 95% interval 5 -+ 2.776 * 0.8165
    t = od.welch([10.0, 11.0, 12.0], [5.0, 6.0, 7.0])
    assert t.difference == 5.0 and t.p == pytest.approx(0.0036, abs=2e-4)
    assert (t.low, t.high) == (pytest.approx(2.733, abs=1e-3), pytest.approx(7.267, abs=1e-3))
    # unequal spreads and sizes, worked by hand: variances of the means 1.5625/4 and 0.01/3, se 0.6277,
    # t = 1.775 / 0.6277 = 2.828 on Welch-Satterthwaite's 3.05 degrees of freedom (t_0.975 = 3.153)
    t = od.welch([1.0, 2.5, 2.0, 4.0], [0.5, 0.7, 0.6])
    assert t.difference == pytest.approx(1.775) and t.p == pytest.approx(0.0650, abs=5e-4)
    assert (t.low, t.high) == (pytest.approx(-0.204, abs=2e-3), pytest.approx(3.754, abs=2e-3))
    assert od.welch([10.0], [5.0, 6.0]) is None                  # no spread on one side
    assert od.welch([2.0, 2.0], [1.0, 1.0]) == od.Welch(1.0, 1.0, 1.0, 0.0)  # no spread at all, yet apart


def test_holm_corrects_the_page_and_decides_each_direction():
    assert od.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert od.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert od.holm([]) == []
    up, down = od.welch([10.0, 11.0, 12.0], [5.0, 6.0, 7.0]), od.welch([5.0, 6.0, 7.0], [10.0, 11.0, 12.0])
    assert od.decide(up, up.p) == od.HOLDS and od.decide(down, down.p) == od.FAILS
    # significant alone, not once ten orderings share the page
    assert od.decide(up, od.holm([up.p] + [0.5] * 9)[0]) == od.HOLDS
    assert od.decide(up, od.holm([up.p * 5] + [0.5] * 9)[0]) == od.NOISE


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
    # an unquoted ' #' cuts a claim short in YAML: two claims then read alike, and are refused
    path.write_text("- claim: MuSu (alpha = 1/3, #A = 3) beats FCOS\n  evidence: e\n  metric: AP\n"
                    "  higher: table5/alpha-1/3-A3\n  lower: table1/fcos\n"
                    "- claim: MuSu (alpha = 1/3, #A = 3) beats FCOS++\n  evidence: e\n  metric: AP\n"
                    "  higher: table5/alpha-1/3-A3\n  lower: table1/fcospp\n")
    with pytest.raises(UserError, match="listed twice"):
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
    assert "](orderings_signal.png)" in doc and (out / "orderings_signal.png").stat().st_size > 5000
    lines = {line.split(" | ")[0].lstrip("| "): line for line in doc.splitlines() if line.startswith("| ")}
    musu = lines["MuSu is more accurate than FCOS"]
    assert "**holds**" in musu
    assert "`table1/alpha-1/3`: 11.0 ± 1.0 (3/5) | `table1/fcos`: 6.0 ± 1.0 (3/5)" in musu
    assert "+5.0 [+2.7, +7.3] | 0.004 | 0.011 |" in musu  # two-sided p, then Holm over the 4 measured
    assert "**does not hold**" in lines["the mutual criteria (Eq. 3) beat v = q (both heads weighted by IoU alone)"]
    assert "**does not hold**" in lines["FCOS beats v = q (IoU alone for both heads is worse than no mutual scheme at all)"]
    assert "**within noise**" in lines["soft targets (Eq. 4) beat hard ones"]
    consistency = lines["MuSu's heads are more consistent than FCOS's (confidence ranks an object's anchors as their IoU does)"]
    assert "**not measured** (table1/fcos has 1 finished seed of 5, two are needed for a spread)" in consistency
    assert "`table1/fcos`: 0.300 (1/5)" in consistency
    # every ordering of the paper is on the page; those the profile does not train say so
    assert "**not measured** (table1/alpha-0 has 0 finished seeds of 5, two are needed for a spread)" in lines[
        "the regulariser matters (alpha = 1/3 beats alpha = 0)"]
    assert "**not measured** (profile signal does not train table1/alpha-1/6 (its `rows:`); " in lines[
        "the regulariser matters (alpha = 1/6 beats alpha = 0)"]
    assert "profile signal does not train table5/alpha-1/3-A3" in lines["with alpha = 1/3, three anchors a location beat one"]
    assert "Holm's method over the\n4 orderings measured on this page" in doc
    total = len(od.orderings())
    assert f"1 holds, 2 does not hold, 1 within noise, {total - 4} not measured." in doc
    # the paper alone has no seeds to judge
    assert main(["report", "all", *common, "--format", "orderings", "--paper"]) == 2
    assert "drop --paper" in capsys.readouterr().err
    # a table whose rows no ordering names
    mine = tmp_path / "my_grid.yaml"
    mine.write_text("table: my_grid\ntitle: t\ncolumns: [AP]\ndefaults: {method: musu, backbone: r50, schedule: 1x}\n"
                    "rows:\n  - {name: a, label: a}\n")
    assert main(["report", str(mine), "--profile", "smoke", "--workdir", str(tmp_path), "--format", "orderings"]) == 2
    assert "none of the paper's orderings" in capsys.readouterr().err


def test_a_profile_training_every_row_says_which_tables_the_report_left_out(tmp_path, capsys):
    """Without `rows:` every row is trained; an ordering of a table not reported says so."""
    assert main(["report", "soft_hard", "--profile", "smoke", "--workdir", str(tmp_path), "--format", "orderings",
                 "-o", str(tmp_path / "out")]) == 0
    doc = (tmp_path / "out" / "orderings.md").read_text()
    lines = {line.split(" | ")[0].lstrip("| "): line for line in doc.splitlines() if line.startswith("| ")}
    assert "**not measured** (table1 is not in this report)" in lines["MuSu is more accurate than FCOS"]
    assert "**not measured** (soft_hard/soft has 0 finished seeds of 1" in lines["soft targets (Eq. 4) beat hard ones"]
    assert f"{len(od.orderings())} not measured." in doc
