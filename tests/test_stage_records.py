"""Issue 12: the typed records at the stage boundaries and the tracking adapter, without SLURM or training."""
from __future__ import annotations

import json

from reproduce import tracking
from reproduce.node.payload import Payload, row_text
from reproduce.sweep.plan import Run
from reproduce.backends.records import JobRecord, JobStore


def test_a_tracker_for_another_rank_reads_but_never_writes(tmp_path):
    uri = tracking.check(f"sqlite:///{tmp_path / 'mlruns.db'}")
    other = tracking.Tracker(uri, rank=1)
    assert other.open_run("ci", "h1", {}, "row@h1") is None
    other.log("not-a-run", metrics={"AP": 1.0}, tags={"x": "y"})  # no request made: it would fail on this id
    assert other.runs_by_hash("ci") == {}
    main = tracking.Tracker(uri)
    run_id = main.open_run("ci", "h1", {tracking.TAG_ROW: "r"}, "row@h1")
    main.log(run_id, metrics={"AP": 40.5}, tags={tracking.TAG_STATE: "finished"})
    main.log_params(run_id, {"a": "1"})
    main.log_params(run_id, {"a": "1", "b": "2"})  # a resumed attempt logs only what is new
    main.end(run_id, "FINISHED", {tracking.TAG_STATE: "finished"})
    (run,) = other.runs_of("ci", "h1")
    assert (run.run_id, run.status, run.config_hash, run.evaluated) == (run_id, "FINISHED", "h1", True)
    assert run.metrics["AP"] == 40.5 and main.params(run_id) == {"a": "1", "b": "2"} and run.tags[tracking.TAG_ROW] == "r"
    # an unsettled run is reopened, a settled one is not: the next open makes a new run
    assert main.open_run("ci", "h1", {}, "row@h1") != run_id
    assert len(main.runs_of("ci", "h1")) == 2


def test_job_records_keep_earlier_jobs_and_read_older_files(tmp_path):
    first = JobRecord("slurm", "41_0", "/s/41", 1.0)
    second = first.then(JobRecord("slurm", "52_0", "/s/52", 2.0), resubmitted=True)
    third = second.then(JobRecord("slurm", "60_0", "/s/60", 3.0))
    assert [r.job_id for r in third.attempts] == ["41_0", "52_0", "60_0"]
    assert (second.resubmits, third.resubmits) == (1, 0)  # a submission of the user's starts the count again
    store = JobStore.at(tmp_path)
    store.save("ci", {"abc": third})
    assert store.records("ci") == {"abc": third} and store.records("other") == {}
    assert list(json.loads(store.path.read_text())) == [JobStore.key("ci", "abc")]
    # a record an older version wrote: a numeric pid, no backend, earlier jobs as plain dicts
    old = JobRecord.from_json({"job_id": 4242, "folder": "/f", "earlier": [{"backend": "local", "job_id": "7"}]})
    assert (old.backend, old.job_id, old.earlier[0].job_id) == ("slurm", "4242", "7")


def test_a_run_serialises_once_and_rows_stay_pairs():
    run = Run("abc", "smoke/musu_tiny_synthetic", {"x": 1}, "smoke", 0, [("table1", "alpha-1/3")], 0.5, 40)
    assert Run.from_json(json.loads(json.dumps(run.to_json()))) == run
    payload = Payload("abc", run.config_name, run.options, "smoke", tuple(run.rows), 0, "sqlite:///x", "/w")
    assert payload.rows == (("table1", "alpha-1/3"),) and row_text(payload.rows[0]) == "table1/alpha-1/3"
    assert payload.run_name == "table1/alpha-1/3@abc" and payload.tables == ["table1"]
