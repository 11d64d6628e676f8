"""`reproduce run` for real: local processes and the local SLURM cluster,
MLflow on SQLite, no row trained twice, a killed `reproduce run` reattaches."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reproduce import tracking
from conftest import raw_runs

pytestmark = pytest.mark.slow
REPRODUCE = [sys.executable, "-m", "reproduce.cli"]


def reproduce(workdir: Path, sweeps: Path, *args, check=True, timeout=1200):
    cmd = [*REPRODUCE, *args, "--profile", "ci", "--sweeps", str(sweeps),
           *(["--workdir", str(workdir)] if args[0] != "plan" else [])]  # plan reads no work dir
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)  # never a terminal: `cancel` must not wait for an answer
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def mlflow_runs(workdir: Path):
    cl = tracking.client(f"sqlite:///{workdir / 'mlruns.db'}")
    return [r for runs in raw_runs(cl, "ci").values() for r in runs], cl


def assert_finished_once(workdir: Path, expected_hashes: set[str]):
    runs, cl = mlflow_runs(workdir)
    hashes = [r.data.tags[tracking.TAG_HASH] for r in runs]
    assert sorted(hashes) == sorted(expected_hashes), "one MLflow run per config, no duplicates"
    for run in runs:
        assert run.info.status == "FINISHED"
        m = run.data.metrics
        assert {"AP", "AP50", "AP75", "params", "flops", "fps", "top1", "iou_ratio"} <= set(m)
        assert 0.0 <= m["AP"] <= 100.0
        assert m["fps_images"] == 2 and m["fps"] > 0  # the profile's fps: {images: 2}
        # head consistency (issue 13): a fraction, a ratio, and a correlation where one is defined
        assert 0.0 <= m["top1"] <= 1.0 and 0.0 <= m["iou_ratio"] <= 1.0 and -1.0 <= m.get("rho", 0.0) <= 1.0
        assert [h.step for h in cl.get_metric_history(run.info.run_id, "top1")], "logged at the evaluation"
        tags = run.data.tags
        for tag in (tracking.TAG_PROFILE, tracking.TAG_TABLE, tracking.TAG_ROW, tracking.TAG_COMMIT):
            assert tags.get(tag)
        from reproduce.node.fingerprint import library_versions
        assert tags[tracking.TAG_LIBS] == library_versions()  # the job's own environment's (issue 24, item 2)
        assert "model.bbox_head.type" in run.data.params
        history = cl.get_metric_history(run.info.run_id, "train/loss")
        steps = [h.step for h in history]
        assert steps and len(steps) == len(set(steps)), "an iteration was logged (trained) twice"
        arts = {a.path for a in cl.list_artifacts(run.info.run_id)}
        assert {"resolved_config.py", "metrics.json", "consistency_maps.png"} <= arts
        assert any(a.startswith("coco_eval") for a in arts)
    return runs


def planned_hashes(workdir, sweeps, table):
    out = reproduce(workdir, sweeps, "plan", table, "--json")
    return {r["config_hash"] for r in json.loads(out.stdout)["runs"]}


def test_local_run_tracks_everything_and_never_trains_twice(tmp_path, ci_sweeps):
    hashes = planned_hashes(tmp_path, ci_sweeps, "soft_hard")
    assert len(hashes) == 2
    out = reproduce(tmp_path, ci_sweeps, "run", "soft_hard", "--poll", "1")
    assert "2/2 finished" in out.stderr
    runs = assert_finished_once(tmp_path, hashes)
    assert {r.data.tags[tracking.TAG_ROW] for r in runs} == {"soft", "hard"}
    again = reproduce(tmp_path, ci_sweeps, "run", "soft_hard", "--poll", "1")
    assert "2 finished" in again.stderr and "0 to submit" in again.stderr
    assert_finished_once(tmp_path, hashes)
    status = reproduce(tmp_path, ci_sweeps, "status", "soft_hard", "--json")
    assert {s["state"] for s in json.loads(status.stdout)} == {"finished"}
    # The report's numbers are the runs' numbers, beside the paper's.
    report = json.loads(reproduce(tmp_path, ci_sweeps, "report", "soft_hard,table2", "--format", "json").stdout)
    by_row = {r.data.tags[tracking.TAG_ROW]: r for r in runs}
    soft_hard = {row["name"]: row for row in report[0]["rows"]}
    for name in ("soft", "hard"):
        cell = soft_hard[name]["cells"]["AP"]
        assert soft_hard[name]["status"] == "finished" and soft_hard[name]["runs"] == 1
        assert cell["reproduced"] == pytest.approx(by_row[name].data.metrics["AP"])
        assert cell["paper"] == {"soft": 40.6, "hard": 40.0}[name]
        assert cell["difference"] is None  # synthetic AP is not set against COCO's
    assert "synthetic data" in report[0]["no_difference_because"]
    # Table 2's b = 0.10 row is the same config as "soft": shared, not retrained.
    t2 = {row["name"]: row for row in report[1]["rows"]}
    assert t2["b-0.10"]["status"] == "finished"
    assert t2["b-0.10"]["cells"]["AP"]["reproduced"] == soft_hard["soft"]["cells"]["AP"]["reproduced"]
    assert t2["b-0.20"]["status"] == "pending" and t2["b-0.20"]["cells"]["AP"]["reproduced"] is None
    md = reproduce(tmp_path, ci_sweeps, "report", "table2", "--format", "md").stdout
    assert "pending / 40.3" in md
    # Figure 1 per run: drawn by each job, shown on the HTML page beside the numbers (issue 13)
    html = reproduce(tmp_path, ci_sweeps, "report", "soft_hard", "--format", "html").stdout
    assert html.count('alt="consistency maps of ') == 2 and "ρ(conf, IoU)" in html


def test_killed_reproduce_run_reattaches(tmp_path):
    from conftest import make_sweeps
    sweeps = make_sweeps(tmp_path, iters=16, ckpt=4)
    hashes = planned_hashes(tmp_path, sweeps, "table2")
    cmd = [*REPRODUCE, "run", "table2", "--profile", "ci", "--sweeps", str(sweeps), "--workdir", str(tmp_path),
           "--poll", "1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill the submitter once the first run is training.
    deadline = time.time() + 600
    while True:
        assert time.time() < deadline and proc.poll() is None
        # jobs.json appears after submission, so the store is initialised by then.
        if (tmp_path / ".reproduce" / "state" / "jobs.json").exists():
            runs, _ = mlflow_runs(tmp_path)
            if any(r.data.tags.get(tracking.TAG_PROGRESS) for r in runs):
                break
        time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = reproduce(tmp_path, sweeps, "run", "table2", "--poll", "1")
    assert "already submitted (reattaching)" in out.stderr
    assert "3/3 finished" in out.stderr
    assert_finished_once(tmp_path, hashes)


def test_slurm_array_run(tmp_path, ci_sweeps, slurm_cluster):
    # Issue 11, item 13: the local cluster's MaxArraySize is 2 (cluster/local-slurm.sh),
    # so table2's three rows go as two arrays, of two tasks and of one.
    hashes = planned_hashes(tmp_path, ci_sweeps, "table2")
    out = reproduce(tmp_path, ci_sweeps, "run", "table2", "--cluster", slurm_cluster, "--poll", "1")
    assert "3/3 finished" in out.stderr
    runs = assert_finished_once(tmp_path, hashes)
    job_ids = {r.data.tags.get(tracking.TAG_JOB) for r in runs}
    arrays = {}
    for j in job_ids:  # array tasks read JOBID_TASK; submitit submits a lone payload as a plain job
        arrays.setdefault(j.split("_")[0], []).append(j.split("_")[1] if "_" in j else "-")
    assert sorted(sorted(tasks) for tasks in arrays.values()) == [["-"], ["0", "1"]], job_ids
    # Accounting lags the jobs by a few seconds (the runs are FINISHED in MLflow
    # before the job processes exit).
    deadline = time.time() + 120
    while True:
        sacct = subprocess.run(["sacct", "-n", "-X", "-o", "JobID,State", "-j", ",".join(arrays)],
                               capture_output=True, text=True).stdout
        if sacct.count("COMPLETED") == 3 or time.time() > deadline:
            break
        time.sleep(2)
    assert sacct.count("COMPLETED") == 3, sacct


@contextlib.contextmanager
def local_jobs_ended(work: Path):
    """After the block, whatever happened in it: every local job of ``work`` this test
    submitted is gone (its controller leads a session of its own: the group is the job)."""
    try:
        yield
    finally:
        jobs = work / ".reproduce" / "state" / "jobs.json"
        records = json.loads(jobs.read_text()).values() if jobs.exists() else []
        for rec in records:
            for attempt in [rec, *rec.get("earlier", [])]:
                if attempt.get("backend") == "local":
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(int(attempt["job_id"]), signal.SIGKILL)


def status_of(workdir, sweeps, table):
    out = reproduce(workdir, sweeps, "status", table, "--json")
    return {r["row"]: r for r in json.loads(out.stdout)}


def test_cancel_and_logs_on_the_local_executor(tmp_path):
    """`reproduce logs` shows a row's job log and MLflow run; `reproduce cancel`
    stops a running local job (after asking), the row reads cancelled, and the
    next `run` trains it again as a second attempt whose log `logs` tells apart."""
    from conftest import make_sweeps
    sweeps = make_sweeps(tmp_path / "spec", iters=5000, ckpt=1000)  # long enough to be cancelled while running
    work = tmp_path / "w"
    work.mkdir()
    with local_jobs_ended(work):
        reproduce(work, sweeps, "run", "one", "--no-wait")
        deadline = time.time() + 600
        while not re.search(r"iter ([4-9]|\d\d+)/", (row := status_of(work, sweeps, "one")["musu"])["detail"]):
            assert time.time() < deadline, row
            time.sleep(1)
        assert row["state"] == "running" and "it/s" in row["detail"] and "left" in row["detail"], row
        out = reproduce(work, sweeps, "logs", "one", "musu")
        assert "# one/musu: run " in out.stdout and "attempt 1 of 1" in out.stdout and "# MLflow: " in out.stdout
        assert "_log.out" in out.stdout and "_log.err" in out.stdout
        pid = int(json.loads((work / ".reproduce" / "state" / "jobs.json").read_text()).popitem()[1]["job_id"])

        refused = reproduce(work, sweeps, "cancel", "one", check=False)  # stdin is not a terminal
        assert refused.returncode == 2 and "add --yes" in refused.stderr and len(refused.stderr.splitlines()) <= 2
        bad = reproduce(work, sweeps, "cancel", "one", "--row", "nope", "--yes", check=False)
        assert bad.returncode == 2 and "no trained row 'nope'" in bad.stderr and "rows: musu" in bad.stderr
        reproduce(work, sweeps, "cancel", "one", "--yes")
        deadline = time.time() + 120
        while (row := status_of(work, sweeps, "one")["musu"])["state"] != "cancelled":
            assert time.time() < deadline, row
            time.sleep(1)
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()

        out = reproduce(work, sweeps, "run", "one", "--no-wait")  # the second attempt: cancelled again below
        assert "1 to submit" in out.stderr
        deadline = time.time() + 120
        while status_of(work, sweeps, "one")["musu"]["state"] not in ("queued", "running"):
            assert time.time() < deadline
            time.sleep(1)
        reproduce(work, sweeps, "cancel", "one", "--yes")
        latest = reproduce(work, sweeps, "logs", "one", "musu", "--lines", "5")
        first = reproduce(work, sweeps, "logs", "one", "musu", "--attempt", "0")
        assert "attempt 2 of 2" in latest.stdout and "attempt 1 of 2" in first.stdout
        assert f"local job {pid} " in first.stdout and f"local job {pid} " not in latest.stdout
        bad = reproduce(work, sweeps, "logs", "one", "musu", "--attempt", "5", check=False)
        assert bad.returncode == 2 and "2 attempt(s)" in bad.stderr


def test_ctrl_c_and_hangup_leave_local_jobs_training(tmp_path):
    """Issue 11, item 5: SIGINT then SIGHUP to the terminal's whole process group
    (Ctrl-C, a closed SSH session) ends `reproduce run`, not its local jobs."""
    from conftest import make_sweeps
    sweeps = make_sweeps(tmp_path, iters=40, ckpt=20)
    with local_jobs_ended(tmp_path):
        cmd = [*REPRODUCE, "run", "one", "--profile", "ci", "--sweeps", str(sweeps), "--workdir", str(tmp_path),
               "--poll", "1"]
        # Its own session stands for the terminal: the group signalled is reproduce's and whatever shares it.
        # A terminal's Ctrl-C interrupts: SIGINT at its default even when this test runs with it ignored.
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, stdin=subprocess.DEVNULL,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 600
        while True:
            assert time.time() < deadline and proc.poll() is None
            if (tmp_path / ".reproduce" / "state" / "jobs.json").exists():
                runs, _ = mlflow_runs(tmp_path)
                if any(int(r.data.tags.get(tracking.TAG_PROGRESS, "0/1").split("/")[0]) >= 4 for r in runs):
                    break
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert "submitted jobs keep running" in err, err[-2000:]
        with contextlib.suppress(ProcessLookupError):  # whatever is left of the group hangs up too
            os.killpg(proc.pid, signal.SIGHUP)
        (record,) = json.loads((tmp_path / ".reproduce" / "state" / "jobs.json").read_text()).values()
        time.sleep(2)
        from reproduce.backends.local import pid_alive
        assert pid_alive(int(record["job_id"])), "the local job died with the terminal's process group"
        again = reproduce(tmp_path, sweeps, "run", "one", "--poll", "1")
        assert "already submitted (reattaching)" in again.stderr and "1/1 finished" in again.stderr, again.stderr[-2000:]
        (run,), cl = mlflow_runs(tmp_path)
        steps = [m.step for m in cl.get_metric_history(run.info.run_id, "train/loss")]
        assert run.info.status == "FINISHED" and sorted(steps) == list(range(2, 41, 2)), steps


def test_run_on_a_terminal_shows_a_live_table(tmp_path):
    """Issue 14: on a terminal `run` redraws one table (rows, state, detail, time left);
    piped it prints plain lines (every other test reads those)."""
    import pty
    from conftest import make_sweeps
    sweeps = make_sweeps(tmp_path, iters=16, ckpt=8)
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"}
    proc = subprocess.Popen([*REPRODUCE, "run", "one", "--profile", "ci", "--sweeps", str(sweeps), "--workdir",
                             str(tmp_path), "--poll", "1"], cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave,
                            env=env, start_new_session=True)
    os.close(slave)
    out = b""
    with local_jobs_ended(tmp_path):
        deadline = time.time() + 900
        while time.time() < deadline:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal's other side closed: the process is gone
                break
            if not chunk:
                break
            out += chunk
        proc.wait(timeout=60)
    os.close(master)
    text = out.decode(errors="replace")
    assert proc.returncode == 0 and "1/1 finished" in text, text[-3000:]
    assert "\x1b[" in text and "┃" in text and "one/musu" in text, text[-3000:]  # a rich table, redrawn
    assert "finished so far" not in text and "so far" in text


def test_a_local_time_limit_counts_training_not_waiting_for_a_slot(tmp_path, ci_sweeps):
    """Issue 11, item 9: a local job queued behind another run for longer than its time
    limit, twice over, still trains; the limit starts when its slot is free (it used to
    time out while waiting, requeue once, time out again and fail without ever training)."""
    import fcntl
    import threading
    cluster = tmp_path / "local-1min.yaml"
    cluster.write_text("name: local\ntime_min: 1\nmax_requeues: 1\nsignal_delay_s: 10\n")
    slots = tmp_path / ".reproduce" / "slots"
    slots.mkdir(parents=True)
    busy = open(slots / "slot-0.lock", "a+")  # another run holds the machine's only slot for 110 s
    fcntl.flock(busy, fcntl.LOCK_EX)
    threading.Timer(110, lambda: (fcntl.flock(busy, fcntl.LOCK_UN), busy.close())).start()
    start = time.time()
    with local_jobs_ended(tmp_path):
        out = reproduce(tmp_path, ci_sweeps, "run", "one", "--cluster", str(cluster), "--poll", "1", check=False)
    assert out.returncode == 0 and "1/1 finished" in out.stderr, out.stderr[-3000:]
    assert time.time() - start > 110, "it trained only once the slot was free"
    assert "waiting for a free slot" in out.stderr, out.stderr[-3000:]


def test_an_unlabeled_test_split_gets_its_detections_file_for_the_coco_server(tmp_path):
    """Issue 13, item 4: a profile naming a test-dev image-info file (here a synthetic unlabeled
    split) makes each job write that split's detections in the COCO evaluation server's format;
    the report shows the validation numbers it has and names the file to submit."""
    from conftest import make_sweeps
    sweeps = make_sweeps(tmp_path / "spec")
    profile = sweeps / "profiles" / "ci.yaml"
    text = profile.read_text().replace("seed: 0}", "seed: 0, num_test: 3}")
    profile.write_text(text.replace("  val_img: val/\n", "  val_img: val/\n  test_info: annotations/test.json\n"
                                                         "  test_img: test/\n"))
    one = sweeps / "one.yaml"  # a table that reports the unlabeled split, as Table 6 does test-dev
    one.write_text(one.read_text().replace("table: one", "table: one\neval_split: test-dev"))
    with local_jobs_ended(tmp_path):
        reproduce(tmp_path, sweeps, "run", "one", "--poll", "1")
    info = json.loads((tmp_path / "data" / "synthetic-ci" / "annotations" / "test.json").read_text())
    assert "annotations" not in info and len(info["images"]) == 3, "an image-info file, as COCO's test-dev"
    (row,) = json.loads(reproduce(tmp_path, sweeps, "report", "one", "--format", "json").stdout)[0]["rows"]
    assert row["status"] == "finished" and row["cells"]["AP"]["reproduced"] is not None, "the validation numbers"
    (path,) = row["submit"]
    assert Path(path).name.startswith("detections_test-dev2017_") and Path(path).name.endswith("_results.json")
    detections = json.loads(Path(path).read_text())
    assert detections and {d["image_id"] for d in detections} <= {im["id"] for im in info["images"]}
    assert all(set(d) >= {"image_id", "category_id", "bbox", "score"} and len(d["bbox"]) == 4 for d in detections)
    md = reproduce(tmp_path, sweeps, "report", "one", "--format", "md").stdout
    assert "COCO evaluation server" in md and path in md, md
    runs, cl = mlflow_runs(tmp_path)
    assert {a.path for a in cl.list_artifacts(runs[0].info.run_id)} >= {Path(path).name}
