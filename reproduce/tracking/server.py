"""``reproduce server start|stop|status``: an MLflow tracking server for clusters.

One machine can share a SQLite file; jobs on many nodes must not (SQLite's
locking over NFS loses writes). The server keeps runs in a real database
(MariaDB or PostgreSQL, ``--backend-store-uri``) and artifacts in a folder
every node sees (``--artifacts``), and the jobs talk to it over HTTP
(``--tracking-uri`` as printed by ``start``). Its pid, URI and log live in
``WORKDIR/.reproduce/server/``; ``stop`` ends only the process group it started.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from reproduce.errors import UserError
from reproduce.tracking.credentials import redact, scrub, secret


def mlflow_server_env() -> dict[str, str]:
    """The environment of an ``mlflow server`` or ``mlflow ui`` this suite starts. MLflow 3
    starts a job runner with seven Huey consumers beside each server (each a Python process
    that imports MLflow) for its GenAI jobs, which the suite never submits; off unless the
    user turned it on."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}


def _state_dir(workdir: Path) -> Path:
    return Path(workdir).resolve() / ".reproduce" / "server"


def _read(workdir: Path) -> dict | None:
    try:
        return json.loads((_state_dir(workdir) / "server.json").read_text())
    except (OSError, ValueError):
        return None


def _alive(state: dict | None) -> bool:
    if not state:
        return False
    try:
        cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "mlflow" in cmdline and "server" in cmdline


def _healthy(uri: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def start(workdir: Path, backend_store_uri: str, artifacts: Path, host: str, port: int, wait_s: float = 120.0) -> str:
    """Starts the server (or finds it running) and returns its tracking URI."""
    state = _read(workdir)
    if _alive(state):
        return state["uri"]
    if backend_store_uri.startswith("sqlite:"):
        raise UserError("a tracking server for a cluster needs a real database, not SQLite",
                        hint="pass --backend-store-uri mysql+pymysql://USER:PASS@HOST/DB or postgresql://...; "
                             "on one machine the default sqlite:///mlruns.db needs no server")
    artifacts = Path(artifacts).resolve()
    try:
        artifacts.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"the artifacts folder {artifacts} cannot be created ({exc.strerror or exc})",
                        hint="pass --artifacts a shared folder you can write") from None
    folder = _state_dir(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"http://{host}:{port}"
    if _healthy(uri):
        raise UserError(f"something already answers on {uri}", hint="pass another --port, or stop that server")
    mlflow = Path(sys.executable).with_name("mlflow")
    # The store's URI (it may hold a password) goes by environment, not on the command line `ps` shows.
    cmd = [str(mlflow) if mlflow.exists() else "mlflow", "server", "--artifacts-destination", str(artifacts),
           "--serve-artifacts", "--host", host, "--port", str(port), "--workers", "2"]
    if _app_installed():
        cmd += ["--app-name", "musu"]  # MLflow's app and the suite's lean read of runs (tracking.server_app)
    else:
        print("reproduce server: the suite is not installed in this Python (pip install -e . registers its "
              "server app), so the server answers without its lean read; status and report through it read "
              "every run's params and take longer", file=sys.stderr)
    env = {**mlflow_server_env(), "MLFLOW_BACKEND_STORE_URI": secret(backend_store_uri)}
    log = open(folder / "server.log", "ab")
    # A session of its own: a Ctrl-C in the terminal that started it does not stop it.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    state = dict(pid=proc.pid, uri=uri, backend=redact(backend_store_uri), artifacts=str(artifacts),
                 started=time.time())
    tmp = folder / "server.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, folder / "server.json")
    deadline = time.time() + wait_s
    while not _healthy(uri):
        if proc.poll() is not None or time.time() > deadline:
            tail = (folder / "server.log").read_text(errors="replace").strip().splitlines()[-3:]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            raise UserError(f"mlflow server did not come up on {uri}: "
                            f"{scrub(' | '.join(tail), backend_store_uri, secret(backend_store_uri))[:300]}",
                            hint=f"see {folder / 'server.log'}")
        time.sleep(0.5)
    return uri


def _app_installed() -> bool:
    """Whether ``mlflow server --app-name musu`` finds the suite's app (an entry point of its install)."""
    from importlib.metadata import entry_points
    return any(ep.name == "musu" for ep in entry_points(group="mlflow.app"))


def stop(workdir: Path, wait_s: float = 30.0) -> bool:
    """Stops the server this work dir started; False when none runs."""
    state = _read(workdir)
    if not _alive(state):
        return False
    os.killpg(state["pid"], signal.SIGTERM)
    deadline = time.time() + wait_s
    while _alive(state) and time.time() < deadline:
        time.sleep(0.2)
    if _alive(state):
        os.killpg(state["pid"], signal.SIGKILL)
    (_state_dir(workdir) / "server.json").unlink(missing_ok=True)
    return True


def status(workdir: Path) -> tuple[dict, bool] | None:
    """The server this work dir started, and whether it answers; None when none runs."""
    state = _read(workdir)
    return (state, _healthy(state["uri"])) if _alive(state) else None


def serve_ui(uri: str, host: str, port: int) -> None:
    """The MLflow UI on a SQL store (SQLite, or a database server), in the foreground until Ctrl-C."""
    address = f"http://{host}:{port}"
    if _healthy(address):
        raise UserError(f"something already answers on {address}", hint="pass another --port")
    mlflow = Path(sys.executable).with_name("mlflow")
    # The store's URI (it may hold a password) goes by environment, not on the command line `ps` shows.
    cmd = [str(mlflow) if mlflow.exists() else "mlflow", "ui", "--host", host, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, env={**mlflow_server_env(), "MLFLOW_BACKEND_STORE_URI": secret(uri)})
    try:
        deadline = time.time() + 120
        while not _healthy(address):
            if proc.poll() is not None or time.time() > deadline:
                err = proc.stderr.read().decode(errors="replace").strip().splitlines()[-1:] if proc.poll() is not None else []
                raise UserError(f"the MLflow UI did not come up on {address}: {scrub(' '.join(err), secret(uri))[:300]}",
                                hint="pass another --port")
            time.sleep(0.5)
        print(address, flush=True)
        print(f"reproduce: MLflow UI at {address} on {redact(uri)}; Ctrl-C stops it. In its search box, a "
              "table's rows: tags.tables LIKE '%table1%'; one row: tags.`musu.row` = 'alpha-1/3'", file=sys.stderr)
        try:
            proc.wait()
        except KeyboardInterrupt:
            print("reproduce: MLflow UI stopped", file=sys.stderr)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
