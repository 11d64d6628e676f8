"""Issue 11, item 4: one job per config across work dirs sharing a tracking store (reproduce/node/run_lease.py).

Real MLflow (a SQLite store), real threads racing; the clock is injected only
to age a claim past ``FRESH_S``."""
from __future__ import annotations

import threading

import pytest

from reproduce import tracking
from reproduce.node.run_lease import FRESH_S, Lease, claims, live_holder


@pytest.fixture()
def uri(tmp_path):
    return tracking.check(f"sqlite:///{tmp_path / 'mlruns.db'}")


def race(uri, config_hash, work_dirs, settle_s=1.0):
    """Jobs of ``work_dirs`` opening and claiming one config at the same moment, as ``job.run_training`` does."""
    barrier = threading.Barrier(len(work_dirs))
    out = {}

    def job(wd):
        tracker = tracking.Tracker(uri)
        lease = Lease(tracker, "p", config_hash, wd, who=f"job of {wd}", settle_s=settle_s)
        barrier.wait()
        holder = lease.look()
        run_id = tracker.open_run("p", config_hash, {}, "r") if holder is None else None
        out[wd] = holder.who if holder is not None else lease.acquire(run_id)

    threads = [threading.Thread(target=job, args=(wd,)) for wd in work_dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_work_dirs_claiming_at_once_leave_one_holder(uri):
    for round_ in range(3):
        h = f"hash{round_}"
        out = race(uri, h, ["/a", "/b", "/c"])
        winners = [wd for wd, who in out.items() if who is None]
        assert len(winners) == 1, out
        # a loser names a claimant it saw (one that may itself have yielded to the winner since)
        assert all(who in {f"job of {wd}" for wd in out} for who in out.values() if who is not None), out
        runs = [r for r in tracking.Tracker(uri).runs_of("p", h)]
        assert [r.status for r in runs] == ["RUNNING"], "the losers' empty runs are deleted"
        assert [c.work_dir for c in claims(runs[0].tags)] == winners, "the losers' claims are withdrawn"


def test_a_later_job_leaves_a_live_claim_and_takes_a_stale_one(uri):
    assert race(uri, "h", ["/a"]) == {"/a": None}
    tracker = tracking.Tracker(uri)
    later = Lease(tracker, "p", "h", "/b", who="job of /b")
    assert later.look().who == "job of /a"
    assert later.acquire(tracker.open_run("p", "h", {}, "r")) == "job of /a"
    # the same work dir's earlier claim is the flock's business (a requeued attempt sees its predecessor's)
    assert Lease(tracker, "p", "h", "/a", who="again").look() is None
    # a holder that died stops refreshing its claim: FRESH_S later the config is free
    import time
    aged = Lease(tracker, "p", "h", "/b", who="job of /b", clock=lambda: time.time() + FRESH_S + 1)
    assert aged.look() is None
    assert aged.acquire(tracker.open_run("p", "h", {}, "r")) is None


def test_the_holder_heartbeat_refreshes_its_claim(uri):
    tracker = tracking.Tracker(uri)
    now = [1000.0]
    lease = Lease(tracker, "p", "h", "/a", who="job of /a", settle_s=0.01, clock=lambda: now[0])
    run_id = tracker.open_run("p", "h", {}, "r")
    assert lease.acquire(run_id) is None
    now[0] += FRESH_S - 10
    tracker.tag(run_id, lease.beat())
    (claim,) = claims(tracker.run(run_id).tags)
    assert claim.time == now[0] and claim.live(now[0] + 20)
    assert live_holder(tracker.runs_of("p", "h"), "/b", now[0] + 20).who == "job of /a"


def test_status_reads_a_run_another_work_dir_trains_as_running():
    from reproduce.node.run_lease import Claim
    from reproduce.sweep.status import State, classify
    from reproduce.tracking import Attempt, Tracked
    latest = Tracked(None, Attempt("r1", "RUNNING", "120/200", "running", "", 2.0, 1.5))
    claim = Claim("t", "/other/work_dirs/p/h", "SLURM job 42 on node3 (pid 7)", 1000.0)
    st = classify(latest, None, elsewhere=claim, now=1030.0)
    assert st.state == State.RUNNING and "SLURM job 42" in st.detail and "/other/work_dirs/p/h" in st.detail
    assert "30 s ago" in st.detail and st.seconds_left == pytest.approx(40.0)
    assert classify(latest, None).state == State.INTERRUPTED  # no live claim: left behind, resumed here
