"""Issue 24, item 8: a wrong argument is one line and exit status 2, before anything is done."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPRODUCE = [sys.executable, "-m", "reproduce.cli"]


def _refused(args: list[str], cwd: Path) -> str:
    out = subprocess.run([*REPRODUCE, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    err = out.stderr.strip()
    assert out.returncode == 2 and "\n" not in err and "Traceback" not in err, (out.returncode, err)
    return err


@pytest.mark.parametrize("args, needle", [
    (["run", "one", "--poll", "-1"], "--poll: -1 is below 0.1 s"),
    (["run", "one", "--poll", "nan"], "--poll: 'nan' is not a number"),
    (["run", "one", "--parallel", "0"], "--parallel: 0 is fewer than one run at a time"),
    (["logs", "one", "musu", "--lines", "-3"], "--lines: -3 is below 0"),
    (["ui", "--port", "70000"], "--port: 70000 is not a port"),
    (["run", "one", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_a_wrong_argument_is_one_line_and_nothing_is_submitted(tmp_path, ci_sweeps, args, needle):
    work = tmp_path / "w"
    work.mkdir()
    err = _refused([*args, "--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir", str(work)]
                   if args[0] != "ui" else [*args, "--workdir", str(work)], work)
    assert needle in err and "-h` lists the options" in err, err
    assert list(work.iterdir()) == [], "nothing was made before the argument was refused"


def test_a_file_given_as_the_work_dir_is_one_line(tmp_path, ci_sweeps):
    readme = tmp_path / "README.md"
    readme.write_text("mine\n")
    err = _refused(["run", "one", "--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir", str(readme)], tmp_path)
    assert f"{readme} is a file, not a folder" in err
    assert readme.read_text() == "mine\n" and sorted(os.listdir(tmp_path)) == ["README.md", "sweeps"]


@pytest.mark.parametrize("verb", ["run", "status", "report"])
def test_an_unreachable_database_store_fails_the_command_at_once(tmp_path, ci_sweeps, verb):
    """Issue 23, item 6 (and issue 24's `logs` against an unreachable store): MLflow retries a
    refused database connection for about an hour; a command just typed says so in seconds."""
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tmp_path / "w"
    work.mkdir()
    uri = f"mysql+pymysql://alice:s3cr%2Ft@127.0.0.1:{port}/mlflow"
    err = _refused([verb, "one", "--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir", str(work),
                    "--tracking-uri", uri], work)
    assert f"mysql+pymysql://alice@127.0.0.1:{port}/mlflow cannot be reached" in err and "refused" in err, err
    assert "s3cr" not in err
    assert not (work / ".reproduce" / "state").exists(), "nothing was submitted"


def test_logs_against_an_unreachable_store_is_one_line_at_once(tmp_path, ci_sweeps):
    """Issue 24, item 8: `reproduce logs` of a row with a job, its store unreachable, retried for
    four minutes and ended in a traceback. Now: one line (``_refused`` allows it 60 s), the job
    records untouched."""
    import json
    import socket

    from reproduce.sweep.plan import plan_tables
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (run,) = plan_tables("ci", "one", ci_sweeps)[2]
    work = tmp_path / "w"
    state = work / ".reproduce" / "state"
    state.mkdir(parents=True)
    jobs = json.dumps({f"ci:{run.config_hash}": {"backend": "local", "job_id": "1", "folder": str(work)}})
    (state / "jobs.json").write_text(jobs)
    err = _refused(["logs", "one", "musu", "--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir", str(work),
                    "--tracking-uri", f"mysql+pymysql://alice:s3cr%2Ft@127.0.0.1:{port}/mlflow"], work)
    assert "cannot be reached" in err and "refused" in err and "s3cr" not in err, err
    assert (state / "jobs.json").read_text() == jobs


@pytest.mark.parametrize("generate, needle", [
    ("image_size: 10", "image_size must be at least 16, got 10"),
    ("min_size: 60, max_size: 20", "max_size (20) is below min_size (60)"),
    ("min_objects: 0", "min_objects must be at least 1"),
    ("num_train: 2.5", "num_train must be a whole number"),
])
def test_synthetic_settings_the_generator_cannot_draw_are_one_line(tmp_path, ci_sweeps, generate, needle):
    """Issue 24, item 8: `image_size: 10` was numpy's `ValueError: low >= high`, a traceback."""
    profile = ci_sweeps / "profiles" / "ci.yaml"
    profile.write_text(profile.read_text().replace("seed: 0}", f"seed: 0, {generate}}}"))
    for verb in ("plan", "run"):
        err = _refused([verb, "one", "--profile", "ci", "--sweeps", str(ci_sweeps),
                        *(["--workdir", str(tmp_path)] if verb == "run" else [])], tmp_path)
        assert needle in err and "dataset.generate" in err, err
    assert not (tmp_path / "data").exists()


def test_a_damaged_synthetic_marker_is_one_line_and_the_set_is_left_alone(tmp_path, ci_sweeps):
    """Issue 24, item 8: a truncated data/.../spec.json was a JSONDecodeError traceback
    (it is now written whole or not at all)."""
    root = tmp_path / "data" / "synthetic-ci"
    root.mkdir(parents=True)
    (root / "spec.json").write_text('{"image_size": 12')
    (root / "kept.txt").write_text("mine")
    err = _refused(["run", "one", "--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir", str(tmp_path)],
                   tmp_path)
    assert "spec.json is damaged" in err and f"move {root} away" in err, err
    assert (root / "kept.txt").read_text() == "mine" and not list(tmp_path.rglob("jobs.json")), "nothing submitted"


# 9^9 strings once expanded, in a few hundred bytes: printing such a title took 4 GB
LAUGHS = "[" + ", ".join(["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                         + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]) + "]"


@pytest.mark.parametrize("body, needle", [
    (f"title: {LAUGHS}\ncolumns: [AP]\nrows: [{{name: r}}]\n", "aliases expand it to"),
    ("title: &t [x, *t]\ncolumns: [AP]\nrows: [{name: r}]\n", "alias refers to a node that contains it"),
    ("columns: [AP]\nrows:\n  - name: g\n    grid: {b: [%s], alpha: [%s], theta: [%s], beta: [%s]}\n"
     % ((", ".join(str(i) for i in range(40)),) * 4), "this grid makes 2,560,000 rows"),
], ids=["aliases", "itself", "grid"])
def test_a_spec_that_explodes_is_refused_on_one_line_before_it_expands(tmp_path, body, needle):
    """Issue 24, item 7: YAML aliases, and a grid, counted before anything is built from them."""
    spec = tmp_path / "boom.yaml"
    spec.write_text("table: boom\n" + body)
    err = _refused(["plan", str(spec), "--profile", "smoke"], tmp_path)
    assert needle in err and "boom.yaml" in err, err


def test_aliases_in_an_option_are_counted_too(tmp_path):
    err = _refused(["plan", "table2", "--profile", "smoke", "--cfg-options",
                    f"custom={LAUGHS}"], tmp_path)
    assert "--cfg-options custom" in err and "aliases expand it to" in err, err
