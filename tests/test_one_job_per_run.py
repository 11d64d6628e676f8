"""Issue 11, item 4: exactly one job trains a config, whatever the interleaving.

A second job of the same run (``reproduce run`` killed between sbatch and the
job's record submits it again; a requeue racing a resubmission) finds the run's
work dir held by the live job and exits without training or touching the run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from reproduce.node.run_lock import HELD, RunLock


def test_the_work_dir_lock_is_held_by_one_live_process_and_dies_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from reproduce.node.run_lock import RunLock; "
                               f"lock = RunLock({str(tmp_path)!r}); assert lock.acquire(); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        mine = RunLock(tmp_path)
        assert not mine.acquire()
        assert f"pid {holder.pid}" in mine.holder() and "a local job" in mine.holder()
    finally:
        holder.kill()  # a kill -9: the kernel releases the lock
        holder.wait()
    assert mine.acquire(), "a dead holder leaves the run free"
    mine.release()


@pytest.mark.slow
def test_two_jobs_of_one_run_train_it_once(tmp_path):
    """Both jobs submitted at once on two local slots: one trains, the other returns untrained."""
    from conftest import make_sweeps, raw_runs

    from reproduce.sweep import datasets
    from reproduce import tracking
    from reproduce.backends.clusters import load_cluster
    from reproduce.backends.local import pid_alive
    from reproduce.sweep.plan import plan_tables
    from reproduce.sweep.submission import Submission
    sweeps = make_sweeps(tmp_path, iters=16, ckpt=8)
    profile, _, (run,) = plan_tables("ci", "one", sweeps)
    uri = tracking.check(f"sqlite:///{tmp_path / 'mlruns.db'}")
    sub = Submission(profile, load_cluster("local"), tmp_path, uri,
                     datasets.prepare(profile, tmp_path), tmp_path / "weights", parallel=2)
    import submitit

    from reproduce.backends.local import DetachedLocalExecutor, LocalSlotJob
    one = sub.payload(run)
    ex = DetachedLocalExecutor(tmp_path / "jobs", 3, one.slot_dir, one.slots)
    ex.update_parameters(timeout_min=30, gpus_per_node=0, tasks_per_node=1)
    jobs = [ex.submit(LocalSlotJob(), one) for _ in range(2)]
    try:
        results = [j.result() for j in jobs]
    finally:
        for j in jobs:
            if pid_alive(int(j.job_id)):
                os.killpg(int(j.job_id), signal.SIGKILL)
    held = [r for r in results if HELD in r]
    assert len(held) == 1 and "pid" in held[0][HELD], results
    (trained,) = [r for r in results if HELD not in r]
    assert "AP" in trained
    cl = tracking.client(uri)
    (runs,) = raw_runs(cl, "ci").values()
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", "one MLflow run"
    steps = [m.step for m in cl.get_metric_history(runs[0].info.run_id, "train/loss")]
    assert sorted(steps) == list(range(2, 17, 2)), f"every loss step once: {steps}"
    assert isinstance(jobs[0], submitit.local.local.LocalJob)


@pytest.mark.slow
def test_two_work_dirs_on_one_store_train_a_run_once(tmp_path, capfd):
    """Issue 11, item 4, across work dirs: A's job trains; B, logging to the same store, neither
    submits the run (`reproduce run` reads it running in A) nor trains it when its own job
    starts anyway (both decided before A's job claimed the run): one MLflow run, every step once."""
    from conftest import make_sweeps, raw_runs

    from reproduce.sweep import datasets
    from reproduce import tracking
    from reproduce.cli import main
    from reproduce.backends.clusters import load_cluster
    from reproduce.backends.local import DetachedLocalExecutor, LocalSlotJob, pid_alive
    from reproduce.sweep.plan import plan_tables
    from reproduce.node.run_lease import TAG_CLAIM
    from reproduce.sweep.submission import Submission
    sweeps = make_sweeps(tmp_path, iters=120, ckpt=60)
    profile, _, (run,) = plan_tables("ci", "one", sweeps)
    uri = tracking.check(f"sqlite:///{tmp_path / 'shared.db'}")
    cl = tracking.client(uri)

    def job_of(name):
        wd = tmp_path / name
        sub = Submission(profile, load_cluster("local"), wd, uri, datasets.prepare(profile, wd), tmp_path / "weights")
        payload = sub.payload(run)
        ex = DetachedLocalExecutor(wd / "jobs", 3, payload.slot_dir, payload.slots)
        ex.update_parameters(timeout_min=30, gpus_per_node=0, tasks_per_node=1)
        return ex.submit(LocalSlotJob(), payload)

    jobs = [job_of("a")]
    try:
        deadline = time.time() + 180
        while not any(k.startswith(TAG_CLAIM) for runs in raw_runs(cl, "ci").values() for r in runs
                      for k in r.data.tags) or "musu.progress" not in str(raw_runs(cl, "ci")):
            assert time.time() < deadline, "A's job never claimed its run"
            assert not jobs[0].done(), jobs[0].stderr()
            time.sleep(1)
        common = ["--profile", "ci", "--sweeps", str(sweeps), "--tracking-uri", uri]
        assert main(["run", "one", *common, "--workdir", str(tmp_path / "b"), "--no-wait"]) == 0
        out = capfd.readouterr().err  # the progress console writes to stderr
        assert "1 already submitted (reattaching), 0 to submit" in out, out
        assert main(["status", "one", *common, "--workdir", str(tmp_path / "b"), "--json"]) == 0
        (row,) = json.loads(capfd.readouterr().out)
        assert row["state"] == "running" and str(tmp_path / "a") in row["detail"], row
        jobs.append(job_of("b"))  # as if B had decided before A's job claimed the run
        held = jobs[1].result()
        assert HELD in held and "local job" in held[HELD], held
        trained = jobs[0].result()
    finally:
        for j in jobs:
            if pid_alive(int(j.job_id)):
                os.killpg(int(j.job_id), signal.SIGKILL)
    assert "AP" in trained
    (runs,) = raw_runs(cl, "ci").values()
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", "one MLflow run: B's empty one was deleted"
    steps = [m.step for m in cl.get_metric_history(runs[0].info.run_id, "train/loss")]
    assert sorted(steps) == list(range(2, 121, 2)), f"every loss step once: {steps}"


def test_locks_on_shared_file_systems_that_are_not_cluster_wide_are_refused(tmp_path):
    """Issue 24, item 5: the run lock is a flock in the work dir. NFS mounted nolock or
    local_lock, and Lustre mounted localflock, keep each node's locks to itself (two nodes
    both take it); Lustre mounted noflock refuses it (every job ended in a traceback). Such a
    work dir is named on one line before anything is submitted."""
    from reproduce.node.run_lock import flock_problem
    mounts = "\n".join([
        "/dev/sda1 / ext4 rw,relatime 0 0",
        "srv:/export /shared nfs rw,vers=3,nolock,addr=10.0.0.1 0 0",
        "srv:/home /home nfs4 rw,vers=4.2,local_lock=none 0 0",
        "srv:/scratch /scratch nfs4 rw,vers=4.2,local_lock=all 0 0",
        "10.0.0.2@tcp:/lfs /lustre lustre rw,noflock 0 0",
        "10.0.0.2@tcp:/lfs2 /lustre/fast lustre rw,flock 0 0",
        "10.0.0.3@tcp:/l3 /l3 lustre rw,localflock 0 0",
    ])
    assert flock_problem("/shared/work", mounts).endswith("mounted nolock: each node sees only its own locks")
    assert "local_lock=all" in flock_problem("/scratch/u/w", mounts)
    assert "flock is refused there" in flock_problem("/lustre/w", mounts)
    assert flock_problem("/lustre/fast/w", mounts) == ""     # the longest mount point decides
    assert "localflock" in flock_problem("/l3", mounts)
    assert flock_problem("/home/u/w", mounts) == "" and flock_problem("/tmp/w", mounts) == ""
    assert flock_problem(tmp_path) == ""  # this machine's own file systems


def test_a_work_dir_without_cluster_wide_locks_is_refused_before_submitting(tmp_path, monkeypatch):
    """The SLURM backend refuses it in ``admit``, before any job is sent. An NFS mount cannot be
    made here: the mount table is given as a node with an NFS work dir mounted nolock has it,
    and sinfo's half of ``admit`` (tested against the real cluster elsewhere) is left out."""
    import pytest

    import reproduce.backends.slurm as slurm
    from reproduce.backends.clusters import Cluster
    from reproduce.errors import UserError
    from reproduce.node.run_lock import flock_problem
    monkeypatch.setattr(slurm, "flock_problem", lambda path: flock_problem(path, f"srv:/w {tmp_path} nfs rw,nolock 0 0"))
    monkeypatch.setattr(slurm, "check_against_slurm", lambda cluster, gpus: None)
    with pytest.raises(UserError, match="locks are not cluster-wide: .* mounted nolock"):
        slurm.SlurmBackend(Cluster(name="c")).admit(type("Profile", (), {"gpus": 0})(), workdir=tmp_path / "w")
