"""PostgreSQL, the other database the README names for a cluster's tracking server
(issue 23, item 2): ``reproduce server`` on a PostgreSQL of Debian's packages
(``cluster/postgres-db.sh``), whose user's password is full of the characters that
end a URL's user info early; a table trained through the server, every verb
through it, then the same database read directly (``postgresql://``)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import PASSWORD, assert_stored_nowhere, cancel_another_config, password_checked_cli, password_forms
from test_many_nodes import free_port

ROOT = Path(__file__).resolve().parent.parent
REPRODUCE = [sys.executable, "-m", "reproduce.cli"]
POSTGRES = ["bash", str(ROOT / "cluster" / "postgres-db.sh")]
pytestmark = pytest.mark.slow


@pytest.fixture
def postgres_uri():
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("PostgreSQL comes with scripts/bootstrap.sh --system")
    pytest.importorskip("psycopg")
    # under /tmp: as root the server runs as the postgres user, who cannot enter pytest's folders
    folder = Path(tempfile.mkdtemp(prefix="musu-pg-", dir="/tmp"))
    folder.chmod(0o755)
    out = subprocess.run([*POSTGRES, "start", str(folder / "data"), str(free_port()), "musu_pg", "musu_pg", PASSWORD],
                         capture_output=True, text=True, timeout=180)
    try:
        assert out.returncode == 0, out.stderr
        yield out.stdout.strip()
    finally:
        subprocess.run([*POSTGRES, "stop", str(folder / "data")], capture_output=True, text=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_table_through_reproduce_server_on_postgresql_then_read_directly(tmp_path, ci_sweeps, postgres_uri):
    forms = password_forms(PASSWORD)
    server_dir, port = tmp_path / "server", free_port()
    start = subprocess.run([*REPRODUCE, "server", "start", "--workdir", str(server_dir), "--backend-store-uri",
                            postgres_uri, "--artifacts", str(tmp_path / "shared-artifacts"), "--port", str(port)],
                           capture_output=True, text=True, timeout=300)
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        uri = start.stdout.strip()
        work = tmp_path / "w"
        work.mkdir()

        cli = password_checked_cli(work, ci_sweeps, uri, forms)

        out = cli("run", "one", "--poll", "1")
        assert out.returncode == 0 and "1/1 finished" in out.stderr, out.stderr[-3000:]
        for store in (uri, postgres_uri):  # through the server (its lean read), then the database directly
            (row,) = json.loads(cli("status", "one", "--json", store=store).stdout)
            assert row["state"] == "finished", (store == uri, row)
            report = json.loads(cli("report", "one", "--format", "json", store=store).stdout)
            (reported,) = report[0]["rows"]
            assert reported["status"] == "finished" and reported["cells"]["AP"]["reproduced"] is not None, reported
        logs = cli("logs", "one", "musu")
        assert logs.returncode == 0 and uri in logs.stdout, logs.stdout[:500]
        again = cli("run", "one", "--rerun-stale", "--no-wait")
        assert again.returncode == 0 and "1 finished" in again.stderr and "0 to submit" in again.stderr, again.stderr

        cancel_another_config(cli)  # another config, submitted and cancelled while it trains
        assert_stored_nowhere(work, forms)
    finally:
        subprocess.run([*REPRODUCE, "server", "stop", "--workdir", str(server_dir)], capture_output=True, text=True,
                       timeout=120)
