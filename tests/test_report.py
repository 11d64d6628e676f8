"""Reports: the paper-only rendering holds exactly the paper's rows and numbers;
LaTeX compiles; JSON cells carry reproduced, paper, difference and status."""
from __future__ import annotations

import contextlib
import json
import re
import shutil

import pytest

from reproduce.cli import main
from reproduce.sweep.spec import load_tables


def render(capsys, *args):
    assert main(["report", *args]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("table", ["table1", "table2", "table3", "table4", "table5", "table6", "table7",
                                   "soft_hard"])
def test_paper_rendering_holds_exactly_the_paper(capsys, table):
    (spec,) = load_tables(table)
    md = render(capsys, table, "--paper", "--format", "md")
    body = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| method")
            and not ln.startswith("| *")]
    assert len(body) == len(spec.rows)
    for line, row in zip(body, spec.rows):
        cells = [c.strip().strip("*") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        assert cells[0] == row.label.replace("|", "\\|")
        expected = []
        for col in spec.columns:
            v = row.paper.get(col)
            expected.append("-" if v is None else f"{v:.2f}M" if col == "params" else f"{v:.1f}G" if col == "flops"
                            else f"{v:.1f}")
        assert cells[1:] == expected
    data = json.loads(render(capsys, table, "--paper", "--format", "json"))[0]
    assert [r["name"] for r in data["rows"]] == [r.name for r in spec.rows]
    assert all(data["rows"][i]["cells"][c]["paper"] == spec.rows[i].paper.get(c)
               for i in range(len(spec.rows)) for c in spec.columns)


def test_best_is_marked_as_the_paper_marks_it(capsys):
    md = render(capsys, "table2", "--paper", "--format", "md")
    assert "| 0.10 | **40.6** |" in md and "**44.3**" in md


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex comes with scripts/bootstrap.sh --system")
def test_latex_compiles_to_pdf(capsys, tmp_path):
    out = render(capsys, "all", "--paper", "--format", "tex", "-o", str(tmp_path))
    texs = sorted(tmp_path.glob("*.tex"))
    assert len(texs) == 8
    for tex in texs:
        assert "booktabs" in tex.read_text()
        pdf = tex.with_suffix(".pdf")
        assert str(pdf) in out and pdf.stat().st_size > 1000
        assert not tex.with_suffix(".log").exists()


def test_without_pdflatex_the_tex_is_written_and_the_pdf_skipped_on_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert main(["report", "table2", "--paper", "--format", "tex", "-o", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pdflatex not found: .tex written, PDF skipped" in err
    assert (tmp_path / "table2.tex").is_file() and not (tmp_path / "table2.pdf").exists()


NEEDS_CHROMIUM = pytest.mark.skipif(shutil.which("chromedriver") is None,
                                    reason="chromium-driver comes with scripts/bootstrap.sh")


@contextlib.contextmanager
def chromium():
    """A headless Chromium (selenium) that keeps the page's console log, quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    opts = Options()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run", "--disable-component-update"):
        opts.add_argument(flag)
    opts.binary_location = shutil.which("chromium")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def loaded_images(driver) -> list:
    images = driver.find_elements("css selector", "figure img")
    assert all(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", im)
               for im in images)
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    return images


def finished_runs(tmp_path, profile: str, runs: list[dict], values: list[dict[str, float]]) -> None:
    """``runs`` (from ``plan --json``) finished in the work dir's MLflow store with ``values``,
    as the jobs would leave them."""
    from reproduce import tracking
    from reproduce.node.fingerprint import code_fingerprint, library_versions
    cl = tracking.client(tracking.check(f"sqlite:///{tmp_path / 'mlruns.db'}"))
    exp = tracking.Tracker(cl.tracking_uri).experiment(profile)
    for run, metrics in zip(runs, values, strict=True):
        r = cl.create_run(exp, tags={tracking.TAG_HASH: run["config_hash"], tracking.TAG_CODE: code_fingerprint(),
                                     tracking.TAG_LIBS: library_versions()})
        for name, value in metrics.items():
            cl.log_metric(r.info.run_id, name, value)
        cl.set_terminated(r.info.run_id, "FINISHED")


@NEEDS_CHROMIUM
def test_html_page_loads_without_errors(tmp_path, capsys):
    render(capsys, "all", "--paper", "--format", "html", "-o", str(tmp_path))
    page = tmp_path / "index.html"
    html = page.read_text()
    assert "<script" not in html and "http" not in html.replace("http-equiv", "")  # self-contained, offline
    with chromium() as driver:
        driver.get(page.as_uri())
        assert driver.title == "MuSu reproduction report"
        assert len(driver.find_elements("css selector", "section table")) == 8
        assert len(loaded_images(driver)) == 3  # Tables 1, 4 and 5
        driver.set_window_size(1300, 2400)
        driver.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10000


@NEEDS_CHROMIUM
def test_html_page_of_synthetic_runs_shows_the_orderings_and_no_difference_to_coco(tmp_path, capsys):
    """Issue 25, item 7: the orderings as a picture (effects and intervals against zero, by verdict)
    and a table beside the results; synthetic AP is never subtracted from COCO's."""
    import yaml

    from reproduce.sweep.spec import SWEEPS_DIR
    profile = yaml.safe_load((SWEEPS_DIR / "profiles" / "smoke.yaml").read_text())
    profile.update(name="seeded", seeds=3, rows={"table1": ["fcos", "alpha-1/3", "alpha-0"]})
    (tmp_path / "seeded.yaml").write_text(yaml.safe_dump(profile))
    common = ["--profile", str(tmp_path / "seeded.yaml"), "--workdir", str(tmp_path)]
    assert main(["plan", "table1", *common[:2], "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    ap = {"fcos": (10.0, 10.5, 11.0), "alpha-1/3": (14.0, 14.4, 15.0), "alpha-0": (14.2, 14.6, 15.1)}
    finished_runs(tmp_path, "seeded", runs, [{"AP": ap[r["rows"][0][1]][r["seed"]]} for r in runs])
    render(capsys, "table1", *common, "--format", "html", "-o", str(tmp_path / "page"))
    page = tmp_path / "page" / "index.html"
    html = page.read_text()
    assert 'class="diff-pos"' not in html and 'class="diff-neg"' not in html
    assert "No difference to the paper is printed: profile seeded trains on synthetic data" in html
    assert (tmp_path / "page" / "orderings_seeded.png").is_file()
    with chromium() as driver:
        driver.get(page.as_uri())
        images = loaded_images(driver)
        assert [im.get_attribute("alt") for im in images] == [
            "each measured ordering's effect with its 95% interval, coloured by verdict", "table1 plot"]
        rows = driver.find_elements("css selector", "table.orderings tbody tr")
        assert len(rows) == 54  # every ordering of the paper is listed
        verdicts = {r.find_elements("css selector", "td")[0].text: r.find_elements("css selector", "td")[7].text
                    for r in rows}
        assert verdicts["MuSu is more accurate than FCOS"] == "holds"
        assert verdicts["the regulariser matters (alpha = 1/3 beats alpha = 0)"] == "within noise"
        assert verdicts["the mutual criteria (Eq. 3) beat v = p (both heads weighted by confidence alone)"] \
            .startswith("not measured (profile seeded does not train table1/v-p")
        driver.set_window_size(1300, 2400)
        driver.save_screenshot(str(tmp_path / "orderings.png"))
    assert (tmp_path / "orderings.png").stat().st_size > 10000


def test_seeds_are_separate_runs_shown_as_mean_and_std(tmp_path, capsys):
    """A row with `seeds: 3` plans three runs (three hashes); the report shows
    their mean ± std and says 3 runs stand behind the number."""
    import shutil as sh

    from reproduce import tracking
    from reproduce.node.fingerprint import code_fingerprint, library_versions
    from reproduce.sweep.spec import SWEEPS_DIR
    sweeps = tmp_path / "sweeps"
    sh.copytree(SWEEPS_DIR, sweeps)
    (sweeps / "seeded.yaml").write_text("table: seeded\ncolumns: [AP]\nrows:\n"
                                        "  - {name: musu, seeds: 3, paper: {AP: 40.6}}\n")
    common = ["--profile", "smoke", "--sweeps", str(sweeps), "--workdir", str(tmp_path)]
    assert main(["plan", "seeded", *common[:4], "--json"]) == 0  # plan reads no work dir
    plan = json.loads(capsys.readouterr().out)
    assert plan["total_runs"] == 3 and [r["seed"] for r in plan["runs"]] == [0, 1, 2]
    # Three finished runs in the store, as the jobs would leave them.
    uri = tracking.check(f"sqlite:///{tmp_path / 'mlruns.db'}")
    cl = tracking.client(uri)
    exp = tracking.Tracker(cl.tracking_uri).experiment("smoke")
    for run, ap in zip(plan["runs"], (1.0, 2.0, 4.0)):
        r = cl.create_run(exp, tags={tracking.TAG_HASH: run["config_hash"], tracking.TAG_CODE: code_fingerprint(),
                                     tracking.TAG_LIBS: library_versions()})
        cl.log_metric(r.info.run_id, "AP", ap)
        cl.set_terminated(r.info.run_id, "FINISHED")
    assert main(["report", "seeded", *common, "--format", "json"]) == 0
    (table,) = json.loads(capsys.readouterr().out)
    (row,) = table["rows"]
    assert row["runs"] == 3 and row["status"] == "finished"
    assert row["cells"]["AP"]["reproduced"] == pytest.approx(7 / 3)
    assert row["cells"]["AP"]["std"] == pytest.approx(1.5275, abs=1e-3)
    assert main(["report", "seeded", *common, "--format", "md"]) == 0
    md = capsys.readouterr().out
    # synthetic AP minus COCO's compares nothing: no difference, and the page says why
    assert "| musu | **2.3** ± 1.5 / 40.6 | 3 |" in md, md
    assert "no difference is printed: profile smoke trains on synthetic data" in md
    assert row["cells"]["AP"]["difference"] is None and "COCO" in table["no_difference_because"]
    assert main(["report", "seeded", *common, "--format", "tex"]) == 0
    tex = capsys.readouterr().out  # two columns a metric (ours, paper), not three
    for line in (r"\begin{tabular}{lccc}", r"\multicolumn{2}{c}{AP}", r"\cmidrule(lr){2-3}",
                 r"method & ours & paper & runs \\", r"musu & \textbf{2.3}$\pm$1.5 & 40.6 & 3 \\"):
        assert line in tex, tex


def test_a_profile_on_coco_prints_the_difference_to_the_paper(tmp_path, capsys):
    """Only where the profile's data is the paper's (COCO) is "reproduced minus paper" a gap."""
    import shutil as sh

    import yaml

    from reproduce.sweep.spec import SWEEPS_DIR
    sweeps = tmp_path / "sweeps"
    sh.copytree(SWEEPS_DIR, sweeps)
    (sweeps / "seeded.yaml").write_text("table: seeded\ncolumns: [AP]\nrows:\n"
                                        "  - {name: musu, seeds: 2, paper: {AP: 40.6}}\n")
    profile = yaml.safe_load((SWEEPS_DIR / "profiles" / "smoke.yaml").read_text())
    profile.update(name="coco-subset", dataset={**profile["dataset"], "type": "coco"})
    profile["dataset"].pop("generate")
    (tmp_path / "coco-subset.yaml").write_text(yaml.safe_dump(profile))
    common = ["--profile", str(tmp_path / "coco-subset.yaml"), "--sweeps", str(sweeps), "--workdir", str(tmp_path)]
    assert main(["plan", "seeded", *common[:4], "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    finished_runs(tmp_path, "coco-subset", plan["runs"], [{"AP": 30.0}, {"AP": 32.0}])
    assert main(["report", "seeded", *common, "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert "| musu | **31.0** ± 1.4 / 40.6 (-9.6) | 2 |" in md and "no difference" not in md, md
    assert main(["report", "seeded", *common, "--format", "tex"]) == 0
    tex = capsys.readouterr().out
    assert r"musu & \textbf{31.0}$\pm$1.4 & 40.6 & -9.6 & 2" in tex, tex
    assert main(["report", "seeded", *common, "--format", "json"]) == 0
    (table,) = json.loads(capsys.readouterr().out)
    assert table["no_difference_because"] is None
    assert table["rows"][0]["cells"]["AP"]["difference"] == pytest.approx(-9.6)
    assert main(["report", "seeded", *common, "--format", "html"]) == 0
    html = capsys.readouterr().out
    assert '<span class="diff-neg">(-9.6)</span>' in html and "No difference" not in html


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex comes with scripts/bootstrap.sh --system")
def test_latex_without_the_difference_column_compiles(tmp_path, capsys):
    """Sections, pending rows and two columns a metric: the synthetic profile's LaTeX table."""
    out = render(capsys, "table1", "--profile", "smoke", "--workdir", str(tmp_path), "--format", "tex",
                 "-o", str(tmp_path / "tex"))
    tex = (tmp_path / "tex" / "table1.tex").read_text()
    assert r"\multicolumn{20}{l}{\emph{" in tex and "pending & 36.5 & pending & 55.7" in tex
    assert str(tmp_path / "tex" / "table1.pdf") in out, out


def test_no_plot_of_fewer_than_two_finished_values(tmp_path, capsys):
    """A reproduced curve of one point compares nothing: the page says why there is no plot."""
    import yaml

    from reproduce.sweep.spec import SWEEPS_DIR
    profile = yaml.safe_load((SWEEPS_DIR / "profiles" / "smoke.yaml").read_text())
    profile.update(name="two-rows", rows={"table1": ["fcos", "alpha-1/3", "alpha-0"], "table5": ["alpha-1/3-A1",
                                                                                           "alpha-1.0-A3"]})
    (tmp_path / "two-rows.yaml").write_text(yaml.safe_dump(profile))
    common = ["--profile", str(tmp_path / "two-rows.yaml"), "--workdir", str(tmp_path)]
    assert main(["plan", "table1,table5", *common[:2], "--json"]) == 0
    runs = [r for r in json.loads(capsys.readouterr().out)["runs"] if ["table1", "alpha-0"] not in r["rows"]]
    finished_runs(tmp_path, "two-rows", runs, [{"AP": 10.0}] * len(runs))
    html = render(capsys, "table1,table5", *common, "--format", "html")
    assert ("No plot of AP against α: profile two-rows finished fewer than two values of it, and a curve "
            "needs two") in html
    assert "profile two-rows finished fewer than two values of it for any one alpha" in html  # #A 1 and 3
    assert 'alt="table1 plot"' not in html and 'alt="table5 plot"' not in html


def test_partial_seeds_say_so_and_are_never_best(tmp_path, capsys):
    """Issue 11, item 2: two of three seeds finished is not the row's number."""
    import shutil as sh

    from reproduce import tracking
    from reproduce.node.fingerprint import code_fingerprint, library_versions
    from reproduce.sweep.spec import SWEEPS_DIR
    sweeps = tmp_path / "sweeps"
    sh.copytree(SWEEPS_DIR, sweeps)
    (sweeps / "seeded.yaml").write_text("table: seeded\ncolumns: [AP]\nrows:\n"
                                        "  - {name: musu, seeds: 3, paper: {AP: 40.6}}\n"
                                        "  - {name: other, set: {alpha: 0.5}, paper: {AP: 40.0}}\n")
    common = ["--profile", "smoke", "--sweeps", str(sweeps), "--workdir", str(tmp_path)]
    assert main(["plan", "seeded", *common[:4], "--json"]) == 0  # plan reads no work dir
    plan = json.loads(capsys.readouterr().out)
    musu = [r for r in plan["runs"] if ["seeded", "musu"] in r["rows"]]
    other = [r for r in plan["runs"] if ["seeded", "other"] in r["rows"]]
    cl = tracking.client(tracking.check(f"sqlite:///{tmp_path / 'mlruns.db'}"))
    exp = tracking.Tracker(cl.tracking_uri).experiment("smoke")
    for run, ap in ((musu[1], 5.0), (musu[2], 7.0), (other[0], 3.0)):  # the first seed never ran
        r = cl.create_run(exp, tags={tracking.TAG_HASH: run["config_hash"], tracking.TAG_CODE: code_fingerprint(),
                                     tracking.TAG_LIBS: library_versions()})
        cl.log_metric(r.info.run_id, "AP", ap)
        cl.set_terminated(r.info.run_id, "FINISHED")
    assert main(["report", "seeded", *common, "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)[0]["rows"]}
    assert rows["musu"]["status"] == "pending" and rows["musu"]["runs"] == 2  # the row's last seed is finished
    assert rows["musu"]["detail"].startswith("2/3 seeds finished; pending"), rows["musu"]["detail"]
    cell = rows["musu"]["cells"]["AP"]
    assert (cell["seeds_finished"], cell["seeds_planned"], cell["best"]) == (2, 3, False)
    assert rows["other"]["cells"]["AP"]["best"] is True  # the only complete row
    assert main(["report", "seeded", *common, "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert "| musu | 6.0 ± 1.4 (2/3 seeds) / 40.6 | 2 |" in md, md
    for fmt in ("tex", "html"):
        assert main(["report", "seeded", *common, "--format", fmt]) == 0
        assert "2/3" in capsys.readouterr().out
    # status shows each seed of the row, not one of them for all
    assert main(["status", "seeded", *common, "--json"]) == 0
    seen = [(r["seed"], r["state"]) for r in json.loads(capsys.readouterr().out) if r["row"] == "musu"]
    assert seen == [(m["seed"], s) for m, s in zip(musu, ("pending", "finished", "finished"))], seen
    assert main(["status", "seeded", *common]) == 0
    out = capsys.readouterr().out
    assert all(f"musu (seed {m['seed']})" in out for m in musu), out


def test_values_that_print_alike_are_both_marked_best():
    """As the paper bolds ties: 0.6277 and 0.6283 both print 0.628 (rho has 3 decimals)."""
    from reproduce.report.gather import Cell, ReportRow, _mark_best
    from reproduce.sweep.spec import Table
    rows = [ReportRow(n, n, None, "finished", "", 3, [Cell("rho", None, v), Cell("AP", None, ap)])
            for n, v, ap in (("soft", 0.6277, 13.04), ("hard", 0.6283, 11.9))]
    _mark_best(rows, False, Table("t", "t", "", ["rho", "AP"], [], "t.yaml"))
    assert [r.cells[0].best for r in rows] == [True, True]
    assert [r.cells[1].best for r in rows] == [True, False]
