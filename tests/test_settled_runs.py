"""Runs kept under the work dir once settled (issue 23, item 3): a read through MLflow asks
the store only about the runs that may still move, and what is kept never disagrees
with the store. Each case changes the store behind the cache, then compares the
kept read with a whole read of the same store."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from reproduce import tracking
from reproduce.tracking import settled

PROFILE = "cachetest"


def _tracker(uri: str) -> tracking.Tracker:
    t = tracking.Tracker(uri)
    t._sql = None  # read through MLflow's search_runs, as through a server
    return t


def _whole(uri: str) -> dict:
    """Every run, read whole through MLflow's search_runs: the truth the kept read is held to."""
    t = _tracker(uri)
    t._route = False
    return {h: [(r.run_id, r.status, dict(r.tags), dict(r.metrics)) for r in runs]
            for h, runs in t.runs_by_hash(PROFILE).items()}


def _nan_as_text(runs: dict) -> dict:
    return {h: [(i, s, t, {k: "nan" if v != v else v for k, v in m.items()}) for i, s, t, m in rs]
            for h, rs in runs.items()}


def _kept(uri: str, folder, route: bool = False) -> tuple[dict, str]:
    t = _tracker(uri)
    runs = t.runs_by_hash(PROFILE, keep_in=folder)
    if uri.startswith("http"):
        assert (t._route is not False) == route  # the lean route of reproduce server was used, or not offered
    return ({h: [(r.run_id, r.status, dict(r.tags), dict(r.metrics)) for r in rs] for h, rs in runs.items()},
            t.last_read)


def _new_run(uri: str, h: str, finished: bool, ap: float = 30.0) -> str:
    t = tracking.Tracker(uri)
    run_id = t.client.create_run(t.experiment(PROFILE), tags={tracking.TAG_HASH: h}).info.run_id
    t.log(run_id, metrics={"loss": 1.0}, tags={tracking.TAG_PROGRESS: "1/2"})
    if finished:
        t.log(run_id, metrics={"AP": ap})
        t.end(run_id, "FINISHED", {tracking.TAG_STATE: "finished"})
    return run_id


def _store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    ids = {h: _new_run(uri, h, finished=h != "c") for h in ("a", "b", "c")}
    return uri, ids


def test_kept_runs_read_only_what_may_move_and_agree_with_the_store(tmp_path):
    uri, ids = _store(tmp_path)
    folder = tmp_path / "w" / ".reproduce" / "settled-runs"
    assert _kept(uri, folder) == (_whole(uri), "whole")
    kept_file = next(folder.iterdir())
    assert {r[0] for r in json.loads(kept_file.read_text())["runs"]} == {ids["a"], ids["b"]}
    assert _kept(uri, folder) == (_whole(uri), "since")

    c = tracking.Tracker(uri)
    c.log(ids["c"], metrics={"AP": 12.5})           # the running run finishes
    c.end(ids["c"], "FINISHED", {tracking.TAG_STATE: "finished"})
    other = _new_run(uri, "d", finished=True)       # another work dir's run, made and ended between two reads
    c.client.delete_run(ids["a"])                   # a finished run deleted
    c.client.set_terminated(ids["b"], "RUNNING")  # reopened by hand
    got, how = _kept(uri, folder)
    assert how == "since" and got == _whole(uri)
    assert "a" not in got and got["c"][0][1] == "FINISHED" and got["d"][0][0] == other and got["b"][0][1] == "RUNNING"
    c.client.restore_run(ids["a"])                  # restored: active again, read again
    assert _kept(uri, folder) == (_whole(uri), "since") and "a" in _whole(uri)


def test_a_run_ended_on_a_host_whose_clock_is_behind_is_still_seen_finished(tmp_path):
    """Its end time falls before the window the next read asks about; it was seen moving, so it
    is asked for by id."""
    uri, ids = _store(tmp_path)
    folder = tmp_path / "w"
    _kept(uri, folder)
    c = tracking.Tracker(uri)
    c.log(ids["c"], metrics={"AP": 5.0})
    c.client.set_terminated(ids["c"], "FINISHED", end_time=int((time.time() - 2 * settled.SKEW_S) * 1000))
    got, how = _kept(uri, folder)
    assert how == "since" and got == _whole(uri) and got["c"][0][1] == "FINISHED"
    c.client.delete_run(ids["b"])  # and one that vanished because it was deleted (and purged) is not asked back
    assert _kept(uri, folder) == (_whole(uri), "since")
    c.client.delete_run(ids["c"])  # deleted, read, then restored: ended long ago, so asked for by id
    assert _kept(uri, folder) == (_whole(uri), "since")
    c.client.restore_run(ids["c"])
    got, how = _kept(uri, folder)
    assert how == "since" and got == _whole(uri) and got["c"][0][1] == "FINISHED"


def test_another_database_behind_the_same_uri_is_another_store(tmp_path):
    """A server restarted over another database hands out the same experiment id: the kept runs
    are keyed by the experiment's creation time too, so those of the first never show."""
    uri, ids = _store(tmp_path)
    t = _tracker(uri)
    exp = t.experiment(PROFILE)
    created = t.client.get_experiment(exp).creation_time
    assert t._identity[PROFILE] == f"{exp}@{created}"
    path = tmp_path / "kept.json"
    first = settled.SettledRuns(path, uri, f"{exp}@{created}")
    first.read(lambda since: ([settled.Read("r" * 32, "FINISHED", {}, {"AP": 1.0}, 1)], []), lambda i: None)
    other = settled.SettledRuns(path, uri, f"{exp}@{created + 1}")  # same id, another experiment
    got = other.read(lambda since: ([], []), lambda i: None)
    assert other.last_read == "whole" and got == []


def test_a_kept_file_of_another_store_or_age_or_shape_is_never_believed(tmp_path):
    uri, ids = _store(tmp_path)
    folder = tmp_path / "w"
    _kept(uri, folder)
    path = next(folder.iterdir())
    data = json.loads(path.read_text())

    # a file that claims a run the store never had (written by hand, or another store's under the same name)
    forged = {**data, "uri": "sqlite:////elsewhere/mlruns.db",
              "runs": data["runs"] + [["f" * 32, {tracking.TAG_HASH: "z"}, {"AP": 99.0}, 0]]}
    path.write_text(json.dumps(forged))
    assert _kept(uri, folder) == (_whole(uri), "whole")
    # too old: a run purged by `mlflow gc` unseen would otherwise stay forever
    aged = json.loads(path.read_text())
    aged["full_at"] -= settled.FULL_EVERY_S + 1
    aged["runs"].append(["f" * 32, {tracking.TAG_HASH: "z"}, {"AP": 99.0}, 0])
    path.write_text(json.dumps(aged))
    got, how = _kept(uri, folder)
    assert how == "whole" and "z" not in got
    # cut short, or not JSON
    path.write_text(path.read_text()[:40])
    assert _kept(uri, folder) == (_whole(uri), "whole")
    assert json.loads(path.read_text())["format"] == settled.FORMAT  # rewritten whole


def test_a_run_ending_between_the_two_queries_is_read_once_as_finished(tmp_path, monkeypatch):
    uri, ids = _store(tmp_path)
    t = _tracker(uri)
    exp = t.experiment(PROFILE)
    real = t._search

    def search(exp_id, query, deleted_only=False):  # the run ends after the query of moving runs
        got = real(exp_id, query, deleted_only)
        if "!=" in query:
            c = tracking.Tracker(uri)
            c.log(ids["c"], metrics={"AP": 3.0})
            c.end(ids["c"], "FINISHED", {tracking.TAG_STATE: "finished"})
        return got

    monkeypatch.setattr(t, "_search", search)
    runs, deleted = t._runs_by_search(exp, 0)
    assert [(r.run_id, r.status) for r in runs if r.run_id == ids["c"]] == [(ids["c"], "FINISHED")]
    assert deleted == []


def test_a_work_dir_it_cannot_write_still_reads_everything(tmp_path):
    uri, _ = _store(tmp_path)
    (tmp_path / "a-file").write_text("")
    folder = tmp_path / "a-file" / "settled-runs"  # no folder can be made here, not even by root
    assert _kept(uri, folder) == (_whole(uri), "whole")
    assert _kept(uri, folder) == (_whole(uri), "whole")


@pytest.mark.slow
@pytest.mark.parametrize("app", [None, "musu"])
def test_status_through_a_server_asks_only_about_runs_that_may_move(tmp_path, app):
    """Through a real `mlflow server`, plain (search_runs with filters) and with the app
    `reproduce server` runs (its lean route): the kept read agrees with a whole read as runs
    finish, are deleted and appear from elsewhere."""
    from tests.test_server import _mlflow_server, free_port
    port = free_port()
    proc = _mlflow_server(tmp_path / "server.db", tmp_path / "artifacts", port, tmp_path / "server.log",
                          extra=("--app-name", app) if app else ())
    try:
        uri = f"http://127.0.0.1:{port}"
        route = app is not None
        ids = {h: _new_run(uri, h, finished=h != "c") for h in ("a", "b", "c")}
        folder = tmp_path / "w"
        assert _kept(uri, folder, route) == (_whole(uri), "whole")
        c = tracking.Tracker(uri)
        c.client.delete_run(ids["a"])
        c.log(ids["c"], metrics={"AP": float("nan")})  # a NaN metric travels as NaN
        c.end(ids["c"], "FINISHED", {tracking.TAG_STATE: "finished"})
        _new_run(uri, "d", finished=True)
        _new_run(uri, "e", finished=False)
        got, how = _kept(uri, folder, route)
        whole = _whole(uri)
        assert how == "since" and sorted(got) == ["b", "c", "d", "e"]
        assert _nan_as_text(got) == _nan_as_text(whole)  # NaN != NaN
        again, how = _kept(uri, folder, route)
        assert how == "since" and _nan_as_text(again) == _nan_as_text(whole)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        time.sleep(0.1)
