"""Shared fixtures: a tiny profile written as a user would write one, and the
real single-node SLURM cluster from cluster/local-slurm.sh."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CI_PROFILE = """\
# A user-made profile: the synthetic set at its smallest, a dozen iterations.
name: ci
description: tiny synthetic runs for the integration tests
dataset:
  type: synthetic
  root: data/synthetic-ci
  generate: {num_train: 8, num_val: 4, image_size: 128, min_size: 16, max_size: 60, seed: 0}
  train_ann: annotations/train.json
  val_ann: annotations/val.json
  train_img: train/
  val_img: val/
gpus: 0
configs:
  musu/*/*: smoke/musu_tiny_synthetic
  fcospp/*/*: smoke/fcospp_tiny_synthetic
  fcos/*/*: smoke/fcos_tiny_synthetic
cfg_options:
  train_cfg.max_iters: ITERS
  train_cfg.val_interval: ITERS
  train_dataloader.batch_size: 2
  default_hooks.checkpoint.interval: CKPT
  default_hooks.checkpoint.max_keep_ckpts: 2
  default_hooks.logger.interval: 2
  param_scheduler:
    - {type: LinearLR, start_factor: 0.3333333, by_epoch: false, begin: 0, end: 4}
train_pipeline_size: 128
fps: {images: 2, warmup: 1}
cost:
  sec_per_iter: {"*": 0.3}
"""


ONE_ROW = """\
table: one
title: one MuSu run
columns: [AP, AP50, AP75]
defaults: {method: musu, backbone: r50, schedule: 1x}
rows:
  - {name: musu, label: MuSu}
"""


def make_sweeps(tmp_path: Path, iters: int = 8, ckpt: int = 4) -> Path:
    """The suite's specs plus the tiny `ci` profile, in a folder of the test's own."""
    sweeps = tmp_path / "sweeps"
    shutil.copytree(ROOT / "sweeps", sweeps)
    text = CI_PROFILE.replace("ITERS", str(iters)).replace("CKPT", str(ckpt))
    text = text.replace("train_pipeline_size: 128\n", "")
    (sweeps / "profiles" / "ci.yaml").write_text(text)
    (sweeps / "one.yaml").write_text(ONE_ROW)  # a table of one MuSu row
    return sweeps


@pytest.fixture
def ci_sweeps(tmp_path):
    return make_sweeps(tmp_path)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    """The tests of the local SLURM cluster run one after another on one pytest-xdist
    worker (scripts/test runs two; MUSU_TEST_WORKERS=N): some stop and restart its daemons, and its two
    CPUs are one node's. The rest, much of it waiting on jobs and servers, runs beside them."""
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))


@pytest.fixture(scope="session")
def slurm_cluster():
    """Starts the local SLURM (idempotent) and yields; skipped where it cannot run."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (munge, MariaDB, slurmd)")
    if shutil.which("slurmctld") is None:
        pytest.skip("SLURM is not installed; scripts/bootstrap.sh installs it")
    # One pytest process at a time uses the cluster (its tests restart daemons and kill a node):
    # a second one fails here at once rather than meeting those faults mid-test.
    import fcntl
    lock = open(Path(os.environ.get("SLURM_SCRATCH", "/tmp/musu-slurm")).parent / "musu-slurm-tests.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pytest.fail("another pytest process (or xdist worker) uses the local SLURM cluster: its tests must run "
                    "on one worker (--dist loadgroup with pytest < 9, tests/conftest.py)", pytrace=False)
    out = subprocess.run(["bash", str(ROOT / "cluster" / "local-slurm.sh"), "start"], capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    yield "local-slurm"
    lock.close()


@pytest.fixture(scope="session")
def mariadb():
    """The local MariaDB (cluster/local-slurm.sh start-db, idempotent); skipped where it cannot run."""
    if os.geteuid() != 0 or shutil.which("mariadb") is None:
        pytest.skip("MariaDB needs root and scripts/bootstrap.sh --system")
    out = subprocess.run(["bash", str(ROOT / "cluster" / "local-slurm.sh"), "start-db"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return "127.0.0.1:3306"


def mariadb_store(db: str, user: str = "musu_mlflow", password: str = "musu-mlflow-pw") -> str:
    """A database and user made as cluster/mlflow-db.sh makes them for a user: its URI."""
    return subprocess.run(["bash", str(ROOT / "cluster" / "mlflow-db.sh"), db, user, password], capture_output=True,
                          text=True, check=True).stdout.strip()


def drop_mariadb_store(db: str) -> None:
    subprocess.run(["mariadb", "-e", f"DROP DATABASE IF EXISTS `{db}`"], check=False)


@pytest.fixture
def mariadb_uri(tmp_path, mariadb):
    """A fresh MariaDB database for this test (dropped afterwards): its URI."""
    db = f"musu_t_{tmp_path.name[-24:].replace('-', '_')}"
    yield mariadb_store(db)
    drop_mariadb_store(db)


def raw_runs(cl, profile: str, hashes=None) -> dict[str, list]:
    """A profile's MLflow runs as MLflow's own entities, by config hash (newest first): the
    tests read the store directly, not through the suite's tracking adapter they check."""
    from reproduce.tracking import TAG_HASH
    exp = cl.get_experiment_by_name(f"musu-{profile}")
    out: dict[str, list] = {}
    if exp is None:
        return out
    for run in cl.search_runs([exp.experiment_id], max_results=50000, order_by=["attributes.start_time DESC"]):
        h = run.data.tags.get(TAG_HASH)
        if h and (hashes is None or h in hashes):
            out.setdefault(h, []).append(run)
    return out


# ---- a store's password through every verb (MariaDB, PostgreSQL, three nodes on one server) ----------
PASSWORD = "p/a?s#s:w@o%rd"  # every character that ends or splits a URI's parts


def password_forms(password: str = PASSWORD) -> set[str]:
    """The password as typed and as a URI carries it (percent-encoded, with and without '/')."""
    from urllib.parse import quote
    return {password, quote(password, safe=""), quote(password)}


def password_checked_cli(work: Path, sweeps: Path, uri: str, forms: set[str], timeout: int = 900):
    """``cli(VERB, ...)``: ``reproduce`` in ``work`` on the tests' ``ci`` profile and the store ``uri``
    (``store=`` another; ``cancel`` reads no store and takes no --tracking-uri), failing the test if
    what it printed holds the password in any of ``forms``."""
    import sys

    def cli(*argv, store=uri, timeout=timeout):
        given = ["--profile", "ci", "--sweeps", str(sweeps), "--workdir", str(work)]
        if argv[0] != "cancel":
            given += ["--tracking-uri", store]
        out = subprocess.run([sys.executable, "-m", "reproduce.cli", *argv, *given], cwd=work, capture_output=True,
                             text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        said = out.stdout + out.stderr
        assert not [f for f in forms if f in said], f"{argv[0]} printed the password: {said[-2000:]}"
        return out
    return cli


def cancel_another_config(cli, *run_args: str) -> None:
    """Another config of table ``one`` (b=0.2), submitted with ``run_args``, cancelled while it trains and
    read back as cancelled (status lists a SLURM job that is still completing as running: polled 120 s)."""
    import json
    other = ("one", "--set", "b=0.2")
    out = cli("run", *other, *run_args, "--no-wait")
    assert out.returncode == 0 and "1 to submit" in out.stderr, out.stderr[-2000:]
    cancel = cli("cancel", *other, "--yes")
    assert cancel.returncode == 0 and "cancelled" in cancel.stderr + cancel.stdout, cancel.stderr
    deadline = time.time() + 120
    while (one := json.loads(cli("status", *other, "--json").stdout)[0])["state"] in ("running", "queued") \
            and time.time() < deadline:
        time.sleep(2)
    assert one["state"] == "cancelled", one


def assert_stored_nowhere(work: Path, forms: set[str]) -> None:
    """No file under ``work`` (job pickles, records, logs, MLflow's files) holds the password."""
    leaks = [str(p) for p in work.rglob("*") if p.is_file() and any(f.encode() in p.read_bytes() for f in forms)]
    assert not leaks, f"the password is stored in {leaks}"


_STARTED = time.time()


def pytest_terminal_summary(terminalreporter):
    """CI's cost on every run: the set-up .ci/run timed, and the tests' own wall time."""
    setup = os.environ.get("MUSU_CI_SETUP_S")
    tests = time.time() - _STARTED
    line = f"tests: {tests / 60:.1f} min ({tests:.0f} s)"
    if setup:
        line = f"set-up: {int(setup) / 60:.1f} min ({setup} s); " + line
    terminalreporter.write_sep("=", "where the time went")
    terminalreporter.write_line(line)
