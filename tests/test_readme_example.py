"""Issue 14: the README's worked example of a custom sweep, run as written
(only `scripts/reproduce` is given its absolute path, since the commands run in
a folder of their own rather than in the checkout)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_the_readme_custom_sweep_runs_as_written(tmp_path):
    script = readme_block("### Your own sweep").replace("scripts/reproduce", f"{ROOT}/scripts/reproduce")
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=1800, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "4 runs" in out.stdout + out.stderr or "total_runs" in out.stdout
    assert "4/4 finished" in out.stderr, out.stderr[-3000:]
    table = out.stdout[out.stdout.index("my_grid"):] if "my_grid" in out.stdout else out.stdout
    for label in ("b=0.1, tau_ratio=1", "b=0.1, tau_ratio=2", "b=0.2, tau_ratio=1", "b=0.2, tau_ratio=2"):
        assert label in table, out.stdout[-3000:]
    assert (tmp_path / "my_grid.yaml").exists() and (tmp_path / "mlruns.db").exists()
