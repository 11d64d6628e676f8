"""A table tracked in MariaDB read directly (``mysql+pymysql://``), as the README offers a
cluster user: every command works there, and the database user's password, full of the
characters that end a URL's user info early, reaches the store and nothing the suite writes."""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import (PASSWORD, assert_stored_nowhere, cancel_another_config, drop_mariadb_store, mariadb_store,
                      password_checked_cli, password_forms)

pytestmark = pytest.mark.slow


def test_a_table_on_mariadb_with_a_password_that_stays_in_the_environment(tmp_path, ci_sweeps, mariadb):
    db = user = f"musu_u_{tmp_path.name[-20:].replace('-', '_')}"
    uri = mariadb_store(db, user, PASSWORD)
    forms = password_forms(PASSWORD)
    work = tmp_path / "w"
    work.mkdir()
    cli = password_checked_cli(work, ci_sweeps, uri, forms, timeout=600)

    try:
        out = cli("run", "one", "--poll", "1")
        # the job's own look-up of its run filters by the hash tag: KEY, reserved in MariaDB, failed it
        assert out.returncode == 0 and "1/1 finished" in out.stderr, out.stderr[-3000:]
        (row,) = json.loads(cli("status", "one", "--json").stdout)
        assert row["state"] == "finished", row
        report = json.loads(cli("report", "one", "--format", "json").stdout)
        (reported,) = report[0]["rows"]
        assert reported["status"] == "finished" and reported["cells"]["AP"]["reproduced"] is not None, reported
        logs = cli("logs", "one", "musu")
        assert logs.returncode == 0 and f"mysql+pymysql://{user}@127.0.0.1:3306/{db}" in logs.stdout, logs.stdout[:500]
        assert cli("run", "one").returncode == 0  # finished: nothing trained twice
        again = cli("run", "one", "--rerun-stale", "--no-wait")
        assert again.returncode == 0 and "1 finished" in again.stderr and "0 to submit" in again.stderr, again.stderr
        cancel_another_config(cli)  # another config, submitted and cancelled while it trains
        assert_stored_nowhere(work, forms)
    finally:
        drop_mariadb_store(db)
        subprocess.run(["mariadb", "-e", f"DROP USER IF EXISTS '{user}'@'localhost', '{user}'@'127.0.0.1'"],
                       check=False)
