"""Many nodes, one tracking server: the setting the README recommends for a cluster.

A table's runs go as SLURM arrays over three nodes of the local cluster
(``cluster/local-slurm.sh start --nodes 3``: three slurmd, each with its own
name, port and spool folder, sharing this machine's disks as an NFS mount
would), every job logging to one ``reproduce server`` on MariaDB whose
database user has a password full of the characters that end a URL's user
info early. Every verb then works through that server."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (PASSWORD, assert_stored_nowhere, cancel_another_config, drop_mariadb_store, mariadb_store,
                      password_checked_cli, password_forms)
from reproduce.backends.records import JobStore

ROOT = Path(__file__).resolve().parent.parent
REPRODUCE = [sys.executable, "-m", "reproduce.cli"]
LOCAL_SLURM = ["bash", str(ROOT / "cluster" / "local-slurm.sh")]
pytestmark = pytest.mark.slow

THREE_SEEDS = """\
table: three
title: one MuSu row, three seeds
columns: [AP, AP50, AP75]
defaults: {method: musu, backbone: r50, schedule: 1x}
rows:
  - {name: musu, label: MuSu, seeds: 3}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nodes_of(job_ids: list[str]) -> dict[str, str]:
    """Where SLURM ran each job (``sacct``'s NodeList), by job id."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,NodeList", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def test_a_table_spreads_over_three_nodes_logging_to_one_server_on_mariadb(tmp_path, ci_sweeps, slurm_cluster,
                                                                          mariadb):
    (ci_sweeps / "three.yaml").write_text(THREE_SEEDS)
    db = user = f"musu_n_{tmp_path.name[-20:].replace('-', '_')}"
    forms = password_forms(PASSWORD)
    server_dir, port = tmp_path / "server", free_port()
    started = subprocess.run([*LOCAL_SLURM, "start", "--nodes", "3"], capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr
    start = None
    try:
        backend = mariadb_store(db, user, PASSWORD)
        start = subprocess.run([*REPRODUCE, "server", "start", "--workdir", str(server_dir), "--backend-store-uri",
                                backend, "--artifacts", str(tmp_path / "shared-artifacts"), "--port", str(port)],
                               capture_output=True, text=True, timeout=300)
        assert start.returncode == 0, start.stderr[-2000:]
        uri = start.stdout.strip()
        work = tmp_path / "w"
        work.mkdir()
        cli = password_checked_cli(work, ci_sweeps, uri, forms)

        out = cli("run", "three", "--cluster", slurm_cluster, "--poll", "1")
        assert out.returncode == 0 and "3/3 finished" in out.stderr, out.stderr[-3000:]
        job_ids = [r.job_id for r in JobStore.at(work).records("ci").values()]
        where = nodes_of(job_ids)
        assert len(job_ids) == 3 and set(where) == set(job_ids), (job_ids, where)
        assert len(set(where.values())) >= 2, f"the table ran on one node: {where}"
        assert set(where.values()) <= {f"{socket.gethostname().split('.')[0]}-n{i}" for i in (1, 2, 3)}, where

        status = cli("status", "three", "--json")
        assert status.returncode == 0 and {r["state"] for r in json.loads(status.stdout)} == {"finished"}, \
            status.stdout[-2000:]
        report = json.loads(cli("report", "three", "--format", "json").stdout)
        (row,) = report[0]["rows"]
        assert row["status"] == "finished" and row["cells"]["AP"]["reproduced"] is not None, row
        logs = cli("logs", "three", "musu")
        assert logs.returncode == 0 and uri in logs.stdout, logs.stdout[:500]
        again = cli("run", "three", "--cluster", slurm_cluster, "--rerun-stale", "--no-wait")
        assert again.returncode == 0 and "3 finished" in again.stderr and "0 to submit" in again.stderr, again.stderr

        # another run (b=0.2: another config) submitted to the three nodes and cancelled through the same server
        cancel_another_config(cli, "--cluster", slurm_cluster)
        assert_stored_nowhere(work, forms)
    finally:
        if start is not None:
            subprocess.run([*REPRODUCE, "server", "stop", "--workdir", str(server_dir)], capture_output=True,
                           text=True, timeout=120)
        # the other tests of the local cluster use its one node
        restored = subprocess.run([*LOCAL_SLURM, "start"], capture_output=True, text=True, timeout=180)
        drop_mariadb_store(db)
        subprocess.run(["mariadb", "-e", f"DROP USER IF EXISTS '{user}'@'localhost', '{user}'@'127.0.0.1'"],
                       check=False)
        assert restored.returncode == 0, restored.stderr
