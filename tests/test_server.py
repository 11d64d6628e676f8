"""`reproduce server`: an MLflow tracking server with a MariaDB backend and a
shared artifacts folder, and a table run on the local SLURM cluster that logs
to it over HTTP instead of to a SQLite file."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PASSWORD, assert_stored_nowhere, password_forms
from reproduce import tracking
from reproduce.tracking.server import mlflow_server_env
from conftest import raw_runs

ROOT = Path(__file__).resolve().parent.parent
REPRODUCE = [sys.executable, "-m", "reproduce.cli"]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_table_on_slurm_logs_to_the_tracking_server(tmp_path, ci_sweeps, slurm_cluster):
    if shutil.which("mariadb") is None:
        pytest.skip("MariaDB comes with scripts/bootstrap.sh --system")
    db = f"musu_mlflow_{tmp_path.name[-12:].replace('-', '_')}"
    backend = subprocess.run(["bash", str(ROOT / "cluster" / "mlflow-db.sh"), db], capture_output=True, text=True,
                             check=True).stdout.strip()
    server_dir, port = tmp_path / "server", free_port()
    start = subprocess.run([*REPRODUCE, "server", "start", "--workdir", str(server_dir), "--backend-store-uri", backend,
                            "--artifacts", str(tmp_path / "shared-artifacts"), "--port", str(port)],
                           capture_output=True, text=True, timeout=300)
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        uri = start.stdout.strip()
        assert uri == f"http://127.0.0.1:{port}"
        assert "musu-mlflow-pw" not in start.stderr  # the password is never printed
        status = subprocess.run([*REPRODUCE, "server", "status", "--workdir", str(server_dir)], capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 0 and "healthy" in status.stdout and "***" in status.stdout
        work = tmp_path / "w"
        work.mkdir()
        # Issue 11, item 11: credentials in the URI (this server ignores them) go to the jobs
        # by MLflow's environment variables, never into a pickle, a log or a printed line.
        secret = "tok3n-s3cret"
        with_password = uri.replace("http://", f"http://alice:{secret}@")
        args = ["--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir", str(work), "--tracking-uri", with_password]
        out = subprocess.run([*REPRODUCE, "run", "soft_hard", *args, "--cluster", slurm_cluster, "--poll", "1"],
                             cwd=work, capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0 and "2/2 finished" in out.stderr, out.stderr[-3000:]
        assert secret not in out.stdout + out.stderr
        leaks = [str(p) for p in (work / ".reproduce").rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
        assert not leaks, f"the password is stored in {leaks}"
        assert not (work / "mlruns.db").exists(), "nothing went to a SQLite file"
        cl = tracking.client(uri)
        runs = [r for rs in raw_runs(cl, "ci").values() for r in rs]
        assert sorted(r.data.tags[tracking.TAG_ROW] for r in runs) == ["hard", "soft"]
        assert all(r.info.status == "FINISHED" and "AP" in r.data.metrics for r in runs)
        assert all(r.data.tags.get(tracking.TAG_JOB) for r in runs), "logged from SLURM jobs"
        assert not [r for r in runs if secret in json.dumps({**r.data.params, **r.data.tags})]
        arts = {a.path for a in cl.list_artifacts(runs[0].info.run_id)}
        assert "metrics.json" in arts
        assert list((tmp_path / "shared-artifacts").rglob("metrics.json")), "artifacts in the shared folder"
        report = json.loads(subprocess.run([*REPRODUCE, "report", "soft_hard", *args, "--format", "json"], cwd=work,
                                           capture_output=True, text=True, timeout=300).stdout)
        assert {r["status"] for r in report[0]["rows"]} == {"finished"}
    finally:
        stop = subprocess.run([*REPRODUCE, "server", "stop", "--workdir", str(server_dir)], capture_output=True,
                              text=True, timeout=120)
        assert "stopped" in stop.stdout or start.returncode != 0
        subprocess.run(["mariadb", "-e", f"DROP DATABASE IF EXISTS `{db}`"], check=False)


def test_server_refuses_sqlite_and_a_missing_database_on_one_line(tmp_path):
    out = subprocess.run([*REPRODUCE, "server", "start", "--workdir", str(tmp_path)], capture_output=True, text=True,
                         timeout=120, env={k: v for k, v in __import__("os").environ.items()
                                           if k != "MUSU_MLFLOW_BACKEND"})
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no database" in out.stderr
    out = subprocess.run([*REPRODUCE, "server", "start", "--workdir", str(tmp_path), "--backend-store-uri",
                          f"sqlite:///{tmp_path / 'x.db'}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "needs a real database" in out.stderr


def test_ui_serves_the_work_dirs_store_until_interrupted(tmp_path):
    """`reproduce ui`: the MLflow UI on WORKDIR/mlruns.db at 127.0.0.1, its
    address on stdout; Ctrl-C (SIGINT) stops it and the server it started."""
    import signal
    import time
    import urllib.request
    port = free_port()
    # As from a terminal: SIGINT at its default even when this test runs with it ignored.
    proc = subprocess.Popen([*REPRODUCE, "ui", "--port", str(port), "--workdir", str(tmp_path)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        address = proc.stdout.readline().strip()  # printed once the UI answers
        assert address == f"http://127.0.0.1:{port}", proc.stderr.read() if proc.poll() is not None else address
        with urllib.request.urlopen(f"{address}/health", timeout=10) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(address, timeout=10) as resp:
            assert resp.status == 200 and "<html" in resp.read().decode(errors="replace").lower()
        assert (tmp_path / "mlruns.db").exists()
        busy = subprocess.run([*REPRODUCE, "ui", "--port", str(port), "--workdir", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
        assert busy.returncode == 2 and "already answers" in busy.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        except OSError:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the UI still answers after Ctrl-C")


def _mlflow_server(store: Path, artifacts: Path, port: int, log: Path, extra: tuple[str, ...] = (),
                   env: dict | None = None) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1 in a session (and process group) of its own, healthy."""
    import time
    import urllib.request
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{store}",
                             "--artifacts-destination", str(artifacts), "--serve-artifacts", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1", *extra], stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**mlflow_server_env(), **(env or {})})
    deadline = time.time() + 120
    while True:
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)


def test_tracking_server_restart_mid_run_loses_nothing(tmp_path):
    """Issue 11, item 8: the tracking server goes away for 30 s while a local run
    trains and logs to it; training carries on, the run finishes, every metric
    step arrives once, and there is one MLflow run."""
    import os
    import signal
    import time

    from conftest import make_sweeps
    sweeps = make_sweeps(tmp_path / "spec", iters=160, ckpt=1000)
    store, artifacts, port = tmp_path / "server.db", tmp_path / "artifacts", free_port()
    server = _mlflow_server(store, artifacts, port, tmp_path / "server.log")
    uri = f"http://127.0.0.1:{port}"
    work = tmp_path / "w"
    work.mkdir()
    args = ["--profile", "ci", "--sweeps", str(sweeps), "--workdir", str(work), "--tracking-uri", uri]
    try:
        follow = subprocess.Popen([*REPRODUCE, "run", "one", *args, "--poll", "2"], cwd=work, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        cl = tracking.client(uri)
        deadline = time.time() + 600
        while True:
            assert time.time() < deadline and follow.poll() is None, follow.stderr.read()[-2000:]
            runs = [r for rs in raw_runs(cl, "ci").values() for r in rs]
            if any(int(r.data.tags.get(tracking.TAG_PROGRESS, "0/1").split("/")[0]) >= 20 for r in runs):
                break
            time.sleep(1)
        os.killpg(server.pid, signal.SIGKILL)  # the server's own group: the test started it
        server.wait()
        time.sleep(30)
        server = _mlflow_server(store, artifacts, port, tmp_path / "server.log")
        out, err = follow.communicate(timeout=900)
        assert follow.returncode == 0 and "1/1 finished" in err, err[-3000:]
        runs = [r for rs in raw_runs(cl, "ci").values() for r in rs]
        assert len(runs) == 1 and runs[0].info.status == "FINISHED" and "AP" in runs[0].data.metrics, runs
        steps = [m.step for m in cl.get_metric_history(runs[0].info.run_id, "train/loss")]
        assert sorted(steps) == list(range(2, 161, 2)), f"lost or doubled metric steps: {sorted(steps)}"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


def test_a_server_that_enforces_basic_auth_gets_the_password_and_nothing_else_does(tmp_path):
    """Issue 23, item 5: a tracking server behind MLflow's basic-auth app, its password full of
    /?#@:%, given in --tracking-uri as a user types it (percent-encoded). The run trains and
    logs through the server; the password reaches the jobs only through the environment: not
    their pickles, the job records, the logs, the work dir's files or anything printed. Without
    credentials the server refuses, on one line."""
    import os
    import signal
    from urllib.parse import quote

    from conftest import make_sweeps
    sweeps = make_sweeps(tmp_path / "spec")
    ini = tmp_path / "auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{tmp_path / 'auth.db'}\n"
                   "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = free_port()
    server = _mlflow_server(tmp_path / "server.db", tmp_path / "artifacts", port, tmp_path / "server.log",
                            ("--app-name", "basic-auth"),
                            {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
                             "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex()})
    work = tmp_path / "w"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    try:
        bare = f"http://127.0.0.1:{port}"
        uri = f"http://admin:{quote(PASSWORD, safe='')}@127.0.0.1:{port}"
        args = ["--profile", "ci", "--sweeps", str(sweeps), "--workdir", str(work)]
        out = subprocess.run([*REPRODUCE, "run", "one", *args, "--tracking-uri", uri, "--poll", "1"], cwd=work,
                             capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL, env=env)
        assert out.returncode == 0 and "1/1 finished" in out.stderr, out.stderr[-3000:]
        status = subprocess.run([*REPRODUCE, "status", "one", *args, "--tracking-uri", uri], cwd=work,
                                capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, env=env)
        assert status.returncode == 0 and "1 finished" in status.stdout, status.stdout + status.stderr
        printed = out.stdout + out.stderr + status.stdout + status.stderr
        forms = password_forms(PASSWORD)
        assert not any(f in printed for f in forms), "the password was printed"
        assert_stored_nowhere(work, forms)
        pickles = list(work.rglob("*.pkl"))
        assert pickles, "the job's pickles were looked at"
        # the run is on the server, read with the credentials MLflow's client takes from the environment
        os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=PASSWORD)
        try:
            runs = [r for rs in raw_runs(tracking.client(bare), "ci").values() for r in rs]
        finally:
            os.environ.pop("MLFLOW_TRACKING_USERNAME"), os.environ.pop("MLFLOW_TRACKING_PASSWORD")
        assert len(runs) == 1 and runs[0].info.status == "FINISHED" and "AP" in runs[0].data.metrics
        # no credentials: refused by the server, said on one line
        refused = subprocess.run([*REPRODUCE, "status", "one", *args, "--tracking-uri", bare], cwd=work,
                                 capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, env=env)
        err = refused.stderr.strip()
        assert refused.returncode == 2 and "\n" not in err and "Traceback" not in err, err
        assert "401" in err or "nauthorized" in err or "credentials" in err.lower(), err
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)

