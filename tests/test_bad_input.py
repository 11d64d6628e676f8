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
