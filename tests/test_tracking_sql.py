"""Issue 11, item 14: the direct SQL read of a store gives what MLflow's search_runs gives."""
from __future__ import annotations

import math
import sqlite3

import pytest

from mlflow.entities import Metric, RunTag

from reproduce import tracking
from reproduce.tracking.sql import SchemaMismatch, SqlRuns
from reproduce.tracking.uri import is_sql


def _same(a: dict, b: dict) -> bool:
    """Equal, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        (math.isnan(x) and math.isnan(y)) if isinstance(x, float) and isinstance(y, float) and math.isnan(x)
        else x == y for x, y in ((a[k], b[k]) for k in a))


def _through_mlflow(uri: str) -> tracking.Tracker:
    t = tracking.Tracker(uri)
    t._sql = None
    return t


def _as_plain(by_hash: dict) -> dict:
    return {h: [(r.run_id, r.status, dict(r.tags), dict(r.metrics)) for r in runs] for h, runs in by_hash.items()}


def _store(tmp_path, uri: str | None = None) -> str:
    """A real store: two profiles, every status, ties in start time, metrics logged at several
    steps, a NaN, a deleted run, a run without a config hash."""
    uri = tracking.check(uri or f"sqlite:///{tmp_path / 'mlruns.db'}")
    cl = tracking.client(uri)
    writer = tracking.Tracker(uri)
    for profile in ("a", "b"):
        exp = writer.experiment(profile)
        for i in range(12):
            h = f"h{i % 4}"
            r = cl.create_run(exp, tags={tracking.TAG_HASH: h, tracking.TAG_ROW: f"row{i}"}, start_time=1000 + i // 8)
            rid = r.info.run_id
            cl.log_batch(rid, metrics=[Metric("AP", 10.0 + i, 0, 0), Metric("AP", 20.0 + i, 0, 5),
                                       Metric("loss", float("nan") if i == 5 else 0.5, 0, 0)],
                         tags=[RunTag(tracking.TAG_PROGRESS, f"{i}/12")], params=[])
            if i % 3 == 0:
                cl.set_terminated(rid, "FINISHED")
            elif i % 3 == 1:
                cl.set_terminated(rid, "FAILED")
            if i == 7:
                cl.delete_run(rid)
        cl.create_run(exp, tags={"note": "not a suite run"})
    return uri


def test_the_sql_read_is_what_search_runs_returns(tmp_path):
    _compare_with_search_runs(_store(tmp_path))


@pytest.mark.slow
def test_the_sql_read_of_mariadb_is_what_search_runs_returns(tmp_path, mariadb_uri):
    # KEY is reserved in MySQL/MariaDB: a bare `key` column in a query failed every job's own look-up there.
    _compare_with_search_runs(_store(tmp_path, mariadb_uri))


def _compare_with_search_runs(uri: str) -> None:
    fast, slow = tracking.Tracker(uri), _through_mlflow(uri)
    assert fast._sql is not None and is_sql(uri)
    for profile in ("a", "b", "never-logged"):
        for hashes in (None, {"h1"}, {"h0", "h2"}, set()):
            got, want = _as_plain(fast.runs_by_hash(profile, hashes)), _as_plain(slow.runs_by_hash(profile, hashes))
            assert got.keys() == want.keys(), (profile, hashes)
            for h in want:
                assert [r[:2] for r in got[h]] == [r[:2] for r in want[h]], (profile, hashes, h)  # order, status
                for g, w in zip(got[h], want[h]):
                    assert g[2] == w[2] and _same(g[3], w[3]), (profile, h, g[0])
    runs = fast.runs_by_hash("a")
    assert sum(len(v) for v in runs.values()) == 11  # 12 made, one deleted, the hash-less one left out
    assert any(math.isnan(r.metrics["loss"]) for v in runs.values() for r in v)
    assert {r.metrics["AP"] for v in runs.values() for r in v} == {20.0 + i for i in range(12) if i != 7}
    assert fast._client is None  # the reads never opened MLflow
    assert fast.runs_by_hash("unseen") == {} and fast._sql.experiment_id("musu-unseen") is None  # reading makes none


def test_a_store_of_another_schema_is_read_through_mlflow(tmp_path):
    uri = _store(tmp_path)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE experiments (experiment_id INTEGER, name TEXT)").connection.commit()
    try:
        SqlRuns(f"sqlite:///{other}").experiment_id("musu-a")
    except SchemaMismatch as exc:
        assert "lifecycle_stage" in str(exc)
    else:
        raise AssertionError("a table without MLflow's columns was read")
    tracker = tracking.Tracker(uri)
    tracker._sql = SqlRuns(f"sqlite:///{other}")  # this tracker's direct read meets a schema it does not know
    assert _as_plain(tracker.runs_by_hash("a")).keys() == _as_plain(_through_mlflow(uri).runs_by_hash("a")).keys()
    assert tracker._sql is None and len(tracker.runs_by_hash("a")["h1"]) == 3


def test_which_uris_are_read_directly():
    assert is_sql("sqlite:////w/mlruns.db") and is_sql("mysql+pymysql://u@db/mlflow")
    assert is_sql("postgresql://db/mlflow")
    assert not is_sql("http://127.0.0.1:5000") and not is_sql("file:///w/mlruns") and not is_sql("databricks")
