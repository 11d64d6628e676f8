"""Set-up as a researcher meets it: `--cuda` without a toolkit says so on one
line, and the main job and the reports bootstrap and run as an ordinary user
(a cluster's login node gives no root; the cluster has its own SLURM)."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
USER = "musu-nonroot"


def test_cuda_without_a_toolkit_fails_on_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_HOME"}
    env["PATH"] = "/usr/bin:/bin"  # no nvcc there (this machine keeps one under /usr/local)
    out = subprocess.run(["bash", str(ROOT / "scripts" / "bootstrap.sh"), "--cuda"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "no CUDA toolkit found" in out.stderr, out.stderr


def _as_user(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int):
    return subprocess.run(["runuser", "-u", USER, "--", "env", *(f"{k}={v}" for k, v in env.items()), *cmd],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_main_job_and_reports_run_as_an_ordinary_user():
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("creating the ordinary user needs root")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
    base = Path(tempfile.mkdtemp(prefix="musu-nonroot-"))
    try:
        clone = base / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        # The CPU wheel this machine built, so the test does not build mmcv again.
        wheels = base / "wheels"
        cache = Path(os.environ.get("MUSU_WHEEL_CACHE", Path.home() / ".cache" / "musu-wheels"))
        shutil.copytree(cache, wheels) if cache.is_dir() else wheels.mkdir()
        sweeps = base / "sweeps"
        from conftest import make_sweeps
        make_sweeps(base / "spec", iters=4, ckpt=2)
        shutil.copytree(base / "spec" / "sweeps", sweeps)
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(base)], check=True)
        env = dict(HOME=str(base / "home"), MUSU_WHEEL_CACHE=str(wheels), PATH="/usr/local/bin:/usr/bin:/bin",
                   XDG_CACHE_HOME=str(base / "home" / ".cache"))
        plan = _as_user(["scripts/reproduce", "plan", "table1", "--profile", "smoke"], clone, env, 1800)
        assert plan.returncode == 0, plan.stderr[-3000:]
        assert "error" not in plan.stderr and "Debian" not in plan.stderr, plan.stderr[-2000:]
        assert "runs (" in plan.stdout
        work = base / "work"
        args = ["--profile", "ci", "--sweeps", str(sweeps), "--workdir", str(work)]
        run = _as_user(["scripts/reproduce", "run", "one", *args, "--poll", "1"], clone, env, 1200)
        assert run.returncode == 0 and "1/1 finished" in run.stderr, run.stderr[-3000:]
        report = _as_user(["scripts/reproduce", "report", "one", *args, "--format", "tex", "-o", str(base / "out")],
                          clone, env, 600)
        assert report.returncode == 0, report.stderr[-2000:]
        assert (base / "out" / "one.tex").is_file()
        if shutil.which("pdflatex"):
            assert (base / "out" / "one.pdf").is_file()
        else:
            assert "PDF skipped" in report.stderr
        assert all(p.stat().st_uid == pwd.getpwnam(USER).pw_uid for p in (clone / ".venv").iterdir())
    finally:
        shutil.rmtree(base, ignore_errors=True)
