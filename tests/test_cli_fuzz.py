"""Issue 24, item 8: every verb with its arguments wrong, drawn by hypothesis.

Each call names at least one wrong argument (a value argparse or a loader must
refuse); the rest are drawn from good and wrong values alike. Whatever the mix,
the command must end with one line on stderr, exit status 2, no traceback, and
a work dir that already held a store and job records exactly as it was.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_sweeps
from reproduce.cli import main

# (option, good values, wrong values); None as an option: a positional argument
SWEEP = [
    ("--profile", ["ci"], ["nosuchprofile", "", "/nonexistent/profile.yaml"]),
    ("--sweeps", ["SWEEPS"], ["MISSING", "AFILE"]),
    ("--set", ["b=0.2"], ["x", "=1", "nosuchswitch=1", "b=[1, 2]"]),
    ("--cfg-options", ["train_cfg.max_iters=8"], ["=", "novalue", "=x"]),
    ("--configs", [], ["MISSING", "AFILE"]),
]
WORKDIR = [("--workdir", ["WORK"], ["AFILE"])]
STORE = [("--tracking-uri", ["STORE"], ["bogus://x", "sqlite:///MISSING/mlruns.db"])]
# A flag a verb does not take is refused by argparse: each verb is drawn with its own.
NOT_TAKEN = [("--workdir", [], ["WORK"]), ("--tracking-uri", [], ["STORE"])]
VERBS = {
    "plan": [(None, ["one"], ["nosuchtable", "one,,", "MISSING/spec.yaml"]), *SWEEP, NOT_TAKEN[0], NOT_TAKEN[1]],
    "status": [(None, ["one"], ["nosuchtable"]), *SWEEP, *WORKDIR, *STORE],
    "run": [(None, ["one"], ["nosuchtable", "MISSING/spec.yaml"]), *SWEEP, *WORKDIR, *STORE,
            ("--cluster", ["local"], ["nosuchcluster", ""]), ("--parallel", ["1"], ["0", "-1", "x", "1.5"]),
            ("--poll", ["5"], ["-1", "nan", "x", "0"])],
    "check": [(None, ["one"], ["nosuchtable"]), *SWEEP, *WORKDIR, *STORE, ("--cluster", ["local"], ["nosuchcluster"])],
    "report": [(None, ["one"], ["nosuchtable"]), *SWEEP, *WORKDIR, *STORE, ("--format", ["md"], ["pdf", ""]),
               ("-o", [], ["AFILE"])],
    "cancel": [(None, ["one"], ["nosuchtable"]), *SWEEP, *WORKDIR, NOT_TAKEN[1], ("--row", [], ["nosuchrow"])],
    "logs": [(None, ["one"], ["nosuchtable"]), (None, ["musu"], ["nosuchrow"]), *SWEEP, *WORKDIR, *STORE,
             ("--attempt", [], ["x"]), ("--lines", [], ["-2", "x"])],
    "server": [(None, ["status"], ["restart", ""]), *WORKDIR, ("--port", [], ["70000", "0", "x"])],
    "ui": [*WORKDIR, ("--tracking-uri", ["STORE"], ["bogus://x"]), ("--port", [], ["70000", "0", "x"])],
}


@st.composite
def wrong_calls(draw):
    """A verb with exactly one wrong argument; each other option good or left out, so that the
    wrong one reaches its own check instead of an earlier one's."""
    verb = draw(st.sampled_from(sorted(VERBS)))
    options = VERBS[verb]
    wrong = draw(st.sampled_from([i for i, o in enumerate(options) if o[2]]))
    argv = [verb]
    for i, (flag, good, bad) in enumerate(options):
        if i == wrong:
            value = draw(st.sampled_from(bad))
        elif good and (flag is None or flag in ALWAYS or draw(st.booleans())):
            value = draw(st.sampled_from(good))
        else:
            continue
        argv += [value] if flag is None else [flag, value]
    return argv, options[wrong][0] or "positional"


# Given whenever they are not the wrong one: the tests' own specs, work dir and store.
ALWAYS = {"--profile", "--sweeps", "--workdir", "--tracking-uri"}


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".lock"}  # a lock file holds nothing


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A work dir that already holds a store (one finished run) and job records, the suite's
    specs with the tests' tiny profile, and a file where a folder is expected."""
    root = tmp_path_factory.mktemp("fuzz")
    sweeps = make_sweeps(root)
    work = root / "work"
    (work / ".reproduce" / "state").mkdir(parents=True)
    (work / ".reproduce" / "state" / "jobs.json").write_text('{"ci:0123456789ab": {"backend": "local", '
                                                             '"job_id": "1", "folder": "/nonexistent"}}')
    store = f"sqlite:///{work / 'mlruns.db'}"
    from reproduce import tracking
    tracking.check(store)
    tracking.Tracker(store).open_run("ci", "0123456789ab", {}, "earlier")
    afile = root / "README.md"
    afile.write_text("mine\n")
    return dict(SWEEPS=str(sweeps), WORK=str(work), STORE=store, AFILE=str(afile), MISSING=str(root / "missing"),
                root=root)


# derandomize: the same calls on every run (CI never fails on a draw it had not seen before);
# to search further, run it with derandomize=False and more examples
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=wrong_calls())
def test_every_verb_refuses_wrong_arguments_on_one_line_and_changes_nothing(places, call, capsys):
    argv, wrong = call
    argv = [_place(a, places) for a in argv]
    root = places["root"]
    before = _snapshot(root)
    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MUSU_MLFLOW_BACKEND")}
    try:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ.pop("MUSU_MLFLOW_BACKEND", None)
        with pytest.raises(SystemExit) as exited:
            raise SystemExit(main(argv))
    finally:
        for k, v in env.items():
            if v is not None:
                os.environ[k] = v
    _stop_jobs_it_started(places)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exited.value.code == 2, (argv, wrong, err[-2000:])
    assert len(lines) == 1 and "Traceback" not in err, (argv, wrong, err[-2000:])
    after = _snapshot(root)
    assert after == before, (argv, wrong, "changed or added: " + ", ".join(
        sorted(k for k in after.keys() | before.keys() if after.get(k) != before.get(k))))


def _place(arg: str, places: dict) -> str:
    for name in ("SWEEPS", "WORK", "STORE", "AFILE", "MISSING"):
        if arg == name or arg.startswith(name + "/") or arg.endswith("///" + name + "/mlruns.db"):
            return arg.replace(name, places[name])
    if "MISSING" in arg:
        return arg.replace("MISSING", places["MISSING"])
    return arg


def _stop_jobs_it_started(places) -> None:
    """A wrong argument that went unnoticed would have submitted a local job: stop it (by its
    own pid, SIGINT as ``reproduce cancel`` does); the assertions then fail on the records."""
    import json
    import signal
    jobs = Path(places["WORK"]) / ".reproduce" / "state" / "jobs.json"
    for key, record in json.loads(jobs.read_text()).items():
        if key != "ci:0123456789ab" and record.get("backend") == "local":
            try:
                os.kill(int(record["job_id"]), signal.SIGINT)
            except (ProcessLookupError, ValueError):
                pass

