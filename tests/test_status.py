"""Where a run stands, from what MLflow holds of it and what became of its
job. ``classify`` is pure: every combination is checked here in milliseconds,
with no SLURM and no MLflow. ``run`` submits a ``killed`` row again (the
system stopped its job: a dead node, a step SLURM killed while the node
recovered, a cancel by slurmctld), never a ``failed`` one (its own code
failed, or its user cancelled it)."""
from __future__ import annotations

import pickle
from dataclasses import replace

import time

import pytest

from reproduce import backends
from reproduce.backends import JobState
from reproduce.backends.records import JobRecord
from reproduce.sweep.status import ACTIVE, State, classify, last_lines
from reproduce.tracking import Attempt, Tracked

ME, SLURM = "1000", "64030"
NOTHING = Tracked(None, None)


def attempt(status="RUNNING", progress="120/200", state_tag="", error=""):
    return Tracked(None, Attempt("0123456789abcdef", status, progress, state_tag, error))


def local(phase, **kw):
    """A local job as ``LocalBackend`` reports it (started reads queued until its run trains)."""
    return JobState("4242", "local job 4242", phase, queued_until_tracked=True, **kw)


def slurm(phase, state, **kw):
    return JobState("42", "SLURM job 42", phase, state, **kw)


def job_state(record):
    """What the record's backend says of its job, asked alone."""
    return backends.poll([record])[record]


def test_a_finished_run_is_finished_whatever_its_job_says():
    done = Tracked({"AP": 41.23}, Attempt("r", "FINISHED", "200/200", "finished", ""))
    for job in (None, local("started"), slurm("ended", "node_fail"), slurm("waiting", "pending")):
        st = classify(done, job, ME)
        assert (st.state, st.detail, st.metrics) == (State.FINISHED, "AP 41.2", {"AP": 41.23})


def test_without_a_job_a_run_is_pending_or_interrupted():
    assert classify(NOTHING, None, ME).state == State.PENDING
    st = classify(attempt("FAILED"), None, ME)
    assert st.state == State.INTERRUPTED and "MLflow run 01234567 is failed" in st.detail


@pytest.mark.parametrize("mlflow_status, expected", [("RUNNING", State.RUNNING), ("FAILED", State.QUEUED)])
def test_a_live_local_process_runs_once_its_mlflow_run_does(mlflow_status, expected):
    st = classify(attempt(mlflow_status), local("started"), ME)
    assert st.state == expected
    assert st.detail == ("iter 120/200 (local job 4242)" if expected == State.RUNNING
                         else "local job 4242 waiting for a free slot")
    assert classify(NOTHING, local("started"), ME).state == State.QUEUED


def test_slurm_decides_over_a_stale_mlflow_run():
    # a node died with the run RUNNING in MLflow; SLURM requeued the job: queued, not running
    st = classify(attempt("RUNNING"), slurm("waiting", "pending", earlier_states=("node_fail",)), ME)
    assert st.state == State.QUEUED
    assert st.detail == ("SLURM job 42 pending (requeued after node_fail; it resumes from its last checkpoint)")
    # a time-limited job requeued again and again reads as a count, not a list as long as the count
    st = classify(attempt("RUNNING"), slurm("waiting", "pending", earlier_states=("node_fail",) + ("requeued",) * 9), ME)
    assert "(requeued after node_fail, requeued (9 times); it resumes" in st.detail
    st = classify(attempt("FAILED"), slurm("started", "running"), ME)
    assert (st.state, st.detail) == (State.RUNNING, "iter 120/200 (SLURM job 42)")
    assert classify(NOTHING, slurm("started", "running"), ME).detail == "iter starting (SLURM job 42)"


@pytest.mark.parametrize("state", ["node_fail", "boot_fail", "preempted", "deadline"])
def test_system_ends_are_killed(state):
    st = classify(attempt("RUNNING"), slurm("ended", state, result=None), ME)
    assert st.state == State.KILLED and "submits it again" in st.detail


@pytest.mark.parametrize("cancel", ["cancelled", f"cancelled by {SLURM}"])
def test_a_cancel_by_slurm_itself_is_killed(cancel):
    assert classify(attempt(), slurm("ended", cancel, slurm_uid=SLURM), ME).state == State.KILLED


def test_a_users_cancel_is_a_failure():
    st = classify(attempt(), slurm("ended", f"cancelled by {ME}", slurm_uid=SLURM), ME)
    assert (st.state, st.detail) == (State.FAILED, f"job 42 cancelled by {ME}")
    # on a cluster where SLURM runs as the user, a cancel by that uid is the user's
    assert classify(attempt(), slurm("ended", f"cancelled by {ME}", slurm_uid=ME), ME).state == State.FAILED


def test_a_job_killed_without_a_word_is_killed():
    # the CI failure: a requeued job's step killed while the node recovered: FAILED, no result, no MLflow error
    assert "no result" in classify(attempt(), slurm("ended", "failed", result=None), ME).detail
    assert classify(attempt(), local("ended", state="ended", result=None), ME).state == State.KILLED


@pytest.mark.parametrize("job", [slurm("ended", "failed", result="error"), local("ended", state="ended", result="error")])
def test_an_error_of_its_own_is_a_failure(job):
    assert classify(attempt(), job, ME).state == State.FAILED


def test_a_failure_recorded_in_mlflow_wins_and_names_its_exceptions():
    error = ("Traceback (most recent call last):\n  ...\nTimeoutError: the config printer took too long\n"
             "\nDuring handling ...\nRuntimeError: mmengine could not print the config")
    st = classify(attempt("FAILED", state_tag="failed", error=error), slurm("ended", "failed", result=None), ME)
    assert st.state == State.FAILED
    assert st.detail == ("job 42 failed: RuntimeError: mmengine could not print the config <- "
                         "TimeoutError: the config printer took too long")


def test_without_an_error_the_log_tail_explains_a_failure():
    st = classify(attempt(), slurm("ended", "failed", result="error", log_tail="a\nb\nc\nd"), ME)
    assert st.detail == "job 42 failed: b | c | d"


@pytest.mark.parametrize("state", ["timeout", "out_of_memory", "completed"])
def test_ends_the_run_itself_caused_are_failures(state):
    assert classify(attempt(), slurm("ended", state, result=None), ME).state == State.FAILED


def test_the_states_read_as_their_words():
    assert f"{State.QUEUED}" == "queued" and str(State.KILLED) == "killed" and State.FINISHED == "finished"
    assert ACTIVE == {State.QUEUED, State.RUNNING, State.UNKNOWN}


def test_a_job_slurm_says_nothing_about_is_unknown_not_failed():
    """Issue 11, item 6: no usable answer from squeue and sacct is asked again, never a failure."""
    from reproduce.backends.slurm import SlurmBackend
    from reproduce.backends.slurm_view import SlurmView
    silent = SlurmBackend().state_of(JobRecord("slurm", "42", "/x"), SlurmView(live=None, records=None))
    st = classify(attempt("RUNNING"), silent, ME)
    assert st.state == State.UNKNOWN and "asking again" in st.detail


def test_slurm_view_reads_squeue_first_then_sacct_ends_else_unknown():
    """SlurmView's rules on answers as the commands print them."""
    from reproduce.backends.slurm_view import SlurmView, _expand
    assert _expand("95_[1-3,7%2]") == ["95_1", "95_2", "95_3", "95_7"] and _expand("96") == ["96"]
    rec = lambda job, age=600: JobRecord("slurm", job, "", time.time() - age)  # noqa: E731
    view = SlurmView(live={"95_1": "PENDING", "96": "RUNNING"},
                     records={"95_1": ["NODE_FAIL"], "95_0": ["COMPLETED"], "97": ["RUNNING"],
                              "98": ["CANCELLED by 1000"]})
    assert view.state(rec("95_1")) == "PENDING"            # squeue holds it: sacct's NODE_FAIL is behind
    assert view.state(rec("95_0")) == "COMPLETED"
    assert view.state(rec("97")) == "UNKNOWN"              # gone from squeue, sacct still says running
    assert view.state(rec("98")) == "CANCELLED by 1000"
    assert view.state(rec("99")) == "VANISHED"             # neither knows it, long after submission
    assert view.state(rec("99", age=5)) == "UNKNOWN"       # just submitted
    assert SlurmView(live=None, records={"98": ["COMPLETED"]}).state(rec("98")) == "UNKNOWN"
    assert SlurmView(live={}, records=None).state(rec("99")) == "UNKNOWN"


def test_an_ended_local_job_reads_its_result(tmp_path):
    """The backend's half: the result submitit writes when the job's own code
    returns or raises, and nothing when the process was killed first."""
    import subprocess
    reported, silent = (subprocess.Popen(["true"]) for _ in range(2))
    reported.wait(), silent.wait()  # both ended and reaped
    (tmp_path / f"{reported.pid}_0_result.pkl").write_bytes(pickle.dumps(("error", "Traceback ...")))
    st = job_state(JobRecord("local", str(reported.pid), str(tmp_path)))
    assert (st.phase, st.state, st.result) == ("ended", "ended", "error")
    assert job_state(JobRecord("local", str(silent.pid), str(tmp_path))).result is None


def test_last_lines_without_an_exception_are_the_logs_end():
    assert last_lines("one\ntwo\nthree\nfour") == "two | three | four"


def test_a_job_reproduce_cancel_stopped_reads_cancelled_whatever_its_end():
    for job in (slurm("ended", f"cancelled by {ME}", cancelled=True), local("ended", state="ended", cancelled=True)):
        st = classify(attempt("KILLED", state_tag="interrupted"), job, ME)
        assert st.state == State.CANCELLED and "submits it again" in st.detail
    # still running after the cancel was asked: running until it ends
    assert classify(attempt(), slurm("started", "running", cancelled=True), ME).state == State.RUNNING


def test_a_running_row_shows_its_rate_time_left_and_loss():
    tracked = Tracked(None, Attempt("r", "RUNNING", "120/200", "", "", rate=2.0, loss=1.2345))
    st = classify(tracked, slurm("started", "running"), ME)
    assert st.detail == "iter 120/200, 2 it/s, 40 s left, loss 1.23 (SLURM job 42)" and st.seconds_left == 40
    st = classify(Tracked(None, Attempt("r", "RUNNING", "10/90000", "", "", rate=1.5)), local("started"), ME)
    assert st.detail == "iter 10/90000, 1.5 it/s, 16 h 39 min left (local job 4242)"
    # before the first rate is known: the iteration alone, no estimate
    st = classify(attempt(), slurm("started", "running"), ME)
    assert st.detail == "iter 120/200 (SLURM job 42)" and st.seconds_left is None


def test_an_array_task_cancelled_before_it_started_says_so():
    # sacct keeps no record of it and squeue has forgotten it (seen in CI)
    st = classify(NOTHING, slurm("ended", "vanished", result=None), ME)
    assert st.state == State.FAILED and "cancelled before it started" in st.detail


def test_a_finished_run_without_ap_is_not_finished(tmp_path):
    """Issue 11, item 1: FINISHED is not enough; the evaluation's AP must be there too."""
    from reproduce import tracking
    cl = tracking.client(tracking.check(f"sqlite:///{tmp_path / 'mlruns.db'}"))
    exp = tracking.Tracker(cl.tracking_uri).experiment("ci")
    r = cl.create_run(exp, tags={tracking.TAG_HASH: "abc"})
    cl.log_metric(r.info.run_id, "fps", 3.0)
    cl.set_terminated(r.info.run_id, "FINISHED")
    tracker = tracking.Tracker(cl.tracking_uri)
    runs = tracker.runs_of("ci", "abc")
    assert tracking.finished_run(runs) is None
    assert classify(tracking.tracked(runs), None, ME).state == State.INTERRUPTED
    cl.log_metric(r.info.run_id, "AP", 12.5)
    runs = tracker.runs_of("ci", "abc")
    assert classify(tracking.tracked(runs), None, ME).state == State.FINISHED


def test_a_reused_pid_or_another_host_is_not_a_running_local_job():
    """Issue 11, item 9: a local record names its process by host, boot and start
    time: after a reboot or pid reuse the row is not 'queued' forever."""
    import os
    import socket

    from reproduce.backends.local import process_identity
    mine = JobRecord("local", str(os.getpid()), "/nonexistent", **process_identity(os.getpid()))
    assert job_state(mine).phase == "started"
    reused = replace(mine, started_ticks=str(int(mine.started_ticks) + 1))   # same pid, another process
    assert job_state(reused).phase == "ended"
    rebooted = replace(mine, boot_id="00000000-0000-0000-0000-000000000000")
    assert job_state(rebooted).phase == "ended"
    elsewhere = replace(mine, host=socket.gethostname() + "-other")
    st = classify(attempt("RUNNING"), job_state(elsewhere), ME)
    assert st.state == State.UNKNOWN and "only that machine can tell" in st.detail
    old = JobRecord.from_json({"backend": "local", "job_id": os.getpid(), "folder": "/x"})  # an older version's record
    assert job_state(old).phase == "started"


def test_a_job_that_found_its_run_held_reads_as_that_run():
    """Issue 11, item 4: a second job of a config leaves the run to the live job that holds it."""
    st = classify(attempt("RUNNING"), local("ended", state="ended", result="held"), ME)
    assert st.state == State.RUNNING and "another job holds it" in st.detail
    st = classify(attempt("KILLED", state_tag="interrupted"), slurm("ended", "completed", result="held"), ME)
    assert st.state == State.KILLED and "submits it again" in st.detail


def _stale_finished(newer: tuple[str, str] | None = None):
    """One config's MLflow runs: a run finished with older code (id ``old``), and a newer attempt."""
    from reproduce import tracking
    runs = [tracking.TrackedRun("old", "FINISHED", {tracking.TAG_HASH: "h", tracking.TAG_CODE: "0123456789ab"},
                                {"AP": 40.0})]
    if newer is not None:
        runs.insert(0, tracking.TrackedRun(newer[0], newer[1], {tracking.TAG_HASH: "h",
                                                                tracking.TAG_ERROR: "RuntimeError: boom"}, {}))
    return runs


def test_the_job_that_trained_a_stale_run_is_no_rerun_of_it(tmp_path):
    """Seen in CI: `run` returned once the run was FINISHED, while its local job was still
    exiting; the annotations then changed, and `status` read the stale run as a rerun
    waiting for a slot (`queued`). Only a job of `run --rerun-stale` is a rerun of it."""
    import os
    import socket

    from reproduce.backends.local import process_identity
    from reproduce import tracking
    from reproduce.sweep.status import states_of

    def states(mlruns, records):
        return states_of({h: tracking.tracked(r) for h, r in mlruns.items()}, mlruns, records)
    alive = JobRecord("local", str(os.getpid()), str(tmp_path), time.time(), **process_identity(os.getpid()))
    assert alive.host == socket.gethostname()
    (st,) = states({"h": _stale_finished()}, {"h": alive}).values()
    assert st.state == State.FINISHED and st.stale and st.finished_id == "old", st
    (st,) = states({"h": _stale_finished()}, {"h": replace(alive, rerun_of="old")}).values()
    assert st.state == State.QUEUED and "waiting for a free slot" in st.detail, st
    (st,) = states({"h": _stale_finished(("new", "RUNNING"))}, {"h": replace(alive, rerun_of="old")}).values()
    assert st.state == State.RUNNING, st


def test_a_rerun_that_ended_says_how_unless_it_found_nothing_to_train():
    from reproduce import tracking
    stale = tracking.tracked(_stale_finished())
    failed = tracking.tracked(_stale_finished(("new", "FAILED")))
    st = classify(failed, local("ended", state="ended", result="error"), ME, code="c0de")
    assert st.state == State.FAILED and "boom" in st.detail, st
    held = classify(stale, local("ended", state="ended", result="held"), ME, code="c0de")
    assert held.state == State.KILLED, held
    nothing = classify(stale, local("ended", state="ended", result="success"), ME, code="c0de")
    assert nothing.state == State.FINISHED and nothing.stale, nothing


def test_a_rerun_submitted_again_stays_a_rerun(tmp_path):
    """A rerun killed or failed, submitted again (by `run`'s follow loop or by the user),
    trains as the rerun it was: a plain payload would find the stale run finished and stop."""
    from conftest import make_sweeps

    from reproduce.backends.clusters import load_cluster
    from reproduce.sweep.plan import plan_tables
    from reproduce.sweep.submission import Submission
    profile, _, (run,) = plan_tables("ci", "one", make_sweeps(tmp_path))
    rerun_job = JobRecord("local", "4242", str(tmp_path), 1.0, rerun_of="old")
    plain = Submission(profile, load_cluster("local"), tmp_path, "sqlite:///x", tmp_path, tmp_path / "w")
    assert plain.payload(run).rerun_of == ""
    assert plain.payload(run, rerun_job).rerun_of == "old"
    assert plain.payload(run, replace(rerun_job, rerun_of=None)).rerun_of == ""
    asked = replace(plain, stale={run.config_hash: "older"})
    assert asked.payload(run, rerun_job).rerun_of == "older"
    assert JobRecord.from_json(rerun_job.to_json()).rerun_of == "old"


def test_slurm_without_accounting_reads_an_ended_job_from_its_own_files(tmp_path):
    """Issue 24, item 6: on a cluster without slurmdbd sacct never answers; a job squeue no longer
    lists read ``unknown`` forever and `run` never stopped following. Now it has ended, its own
    result says how, sacct is not asked, and the row says that the cluster keeps no accounting."""
    import time

    from reproduce.backends.slurm import SlurmBackend
    from reproduce.backends.slurm_view import GRACE_S, SlurmView
    old = time.time() - GRACE_S - 1
    done, failed, killed = (JobRecord("slurm", j, str(tmp_path), old) for j in ("71", "72", "73"))
    (tmp_path / "71_0_result.pkl").write_bytes(pickle.dumps(("success", {"AP": 1.0})))
    (tmp_path / "72_0_result.pkl").write_bytes(pickle.dumps(("error", "Traceback ...\nValueError: bad")))
    view = SlurmView(live={}, records=None, accounting=False)
    backend = SlurmBackend()
    states = {r.job_id: backend.state_of(r, view) for r in (done, failed, killed)}
    assert all(s.phase == "ended" and "keeps no accounting" in s.state for s in states.values())
    assert states["71"].result == "success" and states["72"].result == "error" and states["73"].result is None
    assert classify(attempt("RUNNING"), states["73"], ME).state == State.KILLED  # resubmitted, resumes
    failed_state = classify(attempt("FAILED", state_tag="failed", error="ValueError: bad"), states["72"], ME)
    assert failed_state.state == State.FAILED and "keeps no accounting" in failed_state.detail
    # just submitted, not yet listed: asked again, not ended
    fresh = JobRecord("slurm", "74", str(tmp_path), time.time())
    assert backend.state_of(fresh, view).phase == "unknown"
    # with accounting (the default), the same silence is a scheduler not answering: asked again
    assert backend.state_of(killed, SlurmView(live={}, records=None)).phase == "unknown"
    # sacct is not called where there is no accounting
    assert not any(c.startswith("sacct") for c in SlurmView.take([killed], accounting=False).calls)
