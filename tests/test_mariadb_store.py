"""A table tracked in MariaDB read directly (``mysql+pymysql://``), as the README offers a
cluster user: every command works there, and the database user's password, full of the
characters that end a URL's user info early, reaches the store and nothing the suite writes."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from urllib.parse import quote

import pytest

from conftest import drop_mariadb_store, mariadb_store

REPRODUCE = [sys.executable, "-m", "reproduce.cli"]
PASSWORD = "p/a?s#s:w@o%rd"
pytestmark = pytest.mark.slow


def test_a_table_on_mariadb_with_a_password_that_stays_in_the_environment(tmp_path, ci_sweeps, mariadb):
    db = user = f"musu_u_{tmp_path.name[-20:].replace('-', '_')}"
    uri = mariadb_store(db, user, PASSWORD)
    forms = {PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD)}
    work = tmp_path / "w"
    work.mkdir()
    args = ["--profile", "ci", "--sweeps", str(ci_sweeps), "--workdir", str(work), "--tracking-uri", uri]

    def cli(*argv, timeout=600):
        given = args[:-2] if argv[0] == "cancel" else args  # cancel reads no store: it takes no --tracking-uri
        out = subprocess.run([*REPRODUCE, *argv, *given], cwd=work, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
        said = out.stdout + out.stderr
        assert not [f for f in forms if f in said], f"{argv[0]} printed the password: {said[-2000:]}"
        return out

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
        other = ("one", "--set", "b=0.2")  # another config, submitted and cancelled while it trains
        out = cli("run", *other, "--no-wait")
        assert out.returncode == 0 and "1 to submit" in out.stderr, out.stderr[-2000:]
        cancel = cli("cancel", *other, "--yes")
        assert cancel.returncode == 0 and "cancelled" in cancel.stderr + cancel.stdout, cancel.stderr
        deadline = time.time() + 120
        while (one := json.loads(cli("status", *other, "--json").stdout)[0])["state"] in ("running", "queued") \
                and time.time() < deadline:
            time.sleep(2)
        assert one["state"] == "cancelled", one
        leaks = [str(p) for p in work.rglob("*") if p.is_file() and any(f.encode() in p.read_bytes() for f in forms)]
        assert not leaks, f"the password is stored in {leaks}"
    finally:
        drop_mariadb_store(db)
        subprocess.run(["mariadb", "-e", f"DROP USER IF EXISTS '{user}'@'localhost', '{user}'@'127.0.0.1'"],
                       check=False)
