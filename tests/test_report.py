"""Reports: the paper-only rendering holds exactly the paper's rows and numbers;
LaTeX compiles; JSON cells carry reproduced, paper, difference and status."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from reproduce.cli import main
from reproduce.spec import load_tables


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


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex comes with scripts/bootstrap.sh")
@pytest.mark.parametrize("table", ["all"])
def test_latex_compiles(capsys, tmp_path, table):
    render(capsys, table, "--paper", "--format", "tex", "-o", str(tmp_path))
    texs = sorted(tmp_path.glob("*.tex"))
    assert len(texs) == 8
    for tex in texs:
        out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout[-2000:]
        assert "booktabs" in tex.read_text()
        assert (tmp_path / tex.with_suffix(".pdf").name).stat().st_size > 1000
