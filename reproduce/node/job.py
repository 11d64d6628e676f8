"""What runs inside a job (local process or SLURM task): train one run,
tracked in MLflow, resumable after preemption.

A backend calls ``run_training`` in the job (``backends.train_job``); when the
job is preempted or its time limit nears, the backend requeues the same call
and the next attempt resumes from the work dir's last mmengine checkpoint and
continues the *same* MLflow run, so no iteration before that checkpoint is
trained again and no second run appears.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import traceback
from pathlib import Path

from reproduce.node import preflight
from reproduce import tracking
from reproduce.metrics import coco_keys
from reproduce.node.payload import DDP_LAUNCHER, Payload
from reproduce.node.run_lease import Heartbeat, Lease, LeaseLost
from reproduce.node.run_lock import HELD, RunLock
from reproduce.paths import REPO



def git_commit() -> str:
    try:
        root = REPO
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def slurm_rank() -> int:
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def exception_chain(exc: BaseException, limit: int = 6) -> str:
    """'module.Type: message' for an exception and those it was raised from,
    the first cause first: a time-out raised inside a library's handler
    otherwise shows up only as that library's own error."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen and len(chain) < limit:
        seen.add(id(exc))
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        chain.append(f"{type(exc).__module__}.{type(exc).__qualname__}: {message}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(reversed(chain))


def slurm_job_id() -> str | None:
    """``ARRAY_TASK`` as squeue/sacct print it, or the plain job id."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID")


def _mlflow_hook_cls():
    from mmengine.hooks import Hook

    class MLflowProgressHook(Hook):
        """Sends losses, learning rate and progress to the run every ``interval`` iterations."""

        priority = "BELOW_NORMAL"

        def __init__(self, tracker: tracking.Tracker, run_id: str | None, interval: int,
                     lease: Lease | None = None) -> None:
            self.tracker, self.run_id, self.interval, self.lease = tracker, run_id, max(1, interval), lease
            self.last: tuple[float, int] | None = None  # (time, iteration) of the previous report

        def before_train(self, runner) -> None:
            self.last = (time.time(), runner.iter)

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if self.lease is not None and self.lease.lost is not None:  # the heartbeat found the lease taken
                raise LeaseLost(f"another work dir's job ({self.lease.lost}) took this config while this job's "
                                "heartbeat was stopped; this job stops training")
            it = runner.iter + 1
            if it % self.interval and it != runner.max_iters:
                return
            now = time.time()
            tags = {tracking.TAG_PROGRESS: f"{it}/{runner.max_iters}",
                    **(self.lease.claim_tags() if self.lease is not None else {})}
            # the rate over the last interval, and the last total loss, for `status`'s ETA
            if self.last is not None and it > self.last[1] and now > self.last[0]:
                tags[tracking.TAG_RATE] = f"{(it - self.last[1]) / (now - self.last[0]):.4g}"
            self.last = (now, it)
            values = {k: float(v.detach()) if hasattr(v, "detach") else float(v) for k, v in (outputs or {}).items()
                      if hasattr(v, "item") or isinstance(v, (int, float))}
            if "loss" in values:
                tags[tracking.TAG_LOSS] = f"{values['loss']:.4g}"
            metrics = {f"train/{k}": v for k, v in values.items()}
            for name, lrs in runner.optim_wrapper.get_lr().items():
                metrics[f"train/{name}"] = float(lrs[0])
            self.tracker.log(self.run_id, metrics=metrics, tags=tags, step=it)

    return MLflowProgressHook


def _note_requeue(signum: int, lease: Lease) -> None:
    """Let the lease know when the backend's requeue signal comes, whoever handles it then
    (``save_on_signal`` during training, submitit's own handler otherwise): a requeued job's
    lease is left to it while it waits in the queue (``run_lease.REQUEUED_S``)."""
    import signal
    previous = signal.getsignal(signum)
    if not callable(previous):
        return

    def on_signal(sig, frame):
        lease.requeue_asked = True
        try:
            previous(sig, frame)
        except BaseException as exc:
            # submitit refusing to requeue (too many requeues): the job will not wait in the queue
            if type(exc).__name__ == "UncompletedJobError":
                lease.requeue_asked = False
            raise
    signal.signal(signum, on_signal)


def consistency_metrics(result) -> dict[str, float]:
    """``HeadConsistency`` as the metric vocabulary's columns (``rho``, ``top1``, ``iou_ratio``);
    a measure undefined on this evaluation (no object with two anchors) is left out."""
    import math
    values = {"rho": result.spearman, "top1": result.top1, "iou_ratio": result.iou_ratio}
    return {k: float(v) for k, v in values.items() if not math.isnan(v)}


def _run_tags(payload: Payload) -> dict[str, str]:
    """What a new MLflow run of the payload is tagged with: its profile, rows and commit."""
    table, row = payload.rows[0]
    return {tracking.TAG_PROFILE: payload.profile, tracking.TAG_TABLE: table, tracking.TAG_ROW: row,
            tracking.TAG_ROWS: json.dumps([list(r) for r in payload.rows]), tracking.TAG_COMMIT: git_commit(),
            tracking.TAG_TABLES: ",".join(payload.tables), "mlflow.runName": payload.run_name}


# The paper's FPS: 200 images on the GPU. On a CPU the figure compares with
# nothing and 200 images would cost a smoke run a minute or more, so 20.
FPS_IMAGES, FPS_IMAGES_CPU, FPS_WARMUP = 200, 20, 10


def _measure(runner, cfg, images: int = 0, warmup: int = -1) -> dict[str, float]:
    """Table 7's columns for the trained model: params (M), FLOPs (G) at 1333x800,
    and FPS as the paper measured it: batch 1, after a warm-up, CUDA
    synchronised around each image, over ``FPS_IMAGES`` images on a GPU (the
    validation set cycled if smaller), on this job's own device. A profile's
    ``fps:`` sets ``images`` and ``warmup`` (a tiny test profile times a few)."""
    import torch

    from musu.complexity import complexity
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    out = complexity(model, (1333, 800))
    # A plain loader over the validation set: mmengine's samplers synchronise
    # a seed across ranks, and the other ranks of a DDP run have left by now.
    from mmengine.dataset import pseudo_collate
    loader = torch.utils.data.DataLoader(runner.val_dataloader.dataset, batch_size=1, shuffle=False,
                                         collate_fn=pseudo_collate, num_workers=0)
    device = next(model.parameters()).device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    model.eval()
    images = images or (FPS_IMAGES if device.type == "cuda" else FPS_IMAGES_CPU)
    warmup = FPS_WARMUP if warmup < 0 else warmup
    seen, n, timed = 0, 0, 0.0
    with torch.no_grad():
        while n < images:
            for batch in loader:
                sync()
                start = time.perf_counter()
                model.test_step(batch)
                sync()
                seen += 1
                if seen > warmup:
                    timed += time.perf_counter() - start
                    n += 1
                if n >= images:
                    break
    out["fps"] = n / timed if timed > 0 else float("nan")
    out["fps_images"] = float(n)
    return out


def _rank0_decides(work_dir: Path, rank: int, what: str, decide, timeout: float = 600.0) -> bool:
    """Rank 0 decides (``decide()``); the other ranks of the job wait for its verdict on ``what``."""
    attempt = f"{os.environ.get('SLURM_JOB_ID', os.getpid())}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    verdict = work_dir / f".{what}-{attempt}"
    if rank == 0:
        decision = bool(decide())
        work_dir.mkdir(parents=True, exist_ok=True)
        tmp = verdict.with_name(verdict.name + ".tmp")
        tmp.write_text("1" if decision else "0")
        os.replace(tmp, verdict)  # atomic: a waiting rank never reads a half-written verdict
        return decision
    deadline = time.time() + timeout
    while not verdict.exists():
        if time.time() > deadline:
            raise TimeoutError(f"rank {rank}: rank 0 did not decide {what} in {work_dir}")
        time.sleep(0.5)
    return verdict.read_text() == "1"


def setup_distributed(payload: Payload, cfg) -> int:
    """DDP inside one SLURM job, one task per process; returns the world size.

    MASTER_PORT comes from the job id, so two jobs on one node never share a
    port. On GPUs mmengine's ``slurm`` launcher starts NCCL; its launchers pin
    a CUDA device, so on CPU the gloo group is started here and DDP is told to
    use no device ids.
    """
    if payload.launcher != DDP_LAUNCHER:
        return 1
    import torch
    os.environ["MASTER_PORT"] = str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000)
    world = int(os.environ.get("SLURM_NTASKS", "1"))
    if torch.cuda.is_available() or torch.distributed.is_initialized():
        return world
    node = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_NODELIST"]], capture_output=True,
                          text=True, timeout=60).stdout.split()
    os.environ.setdefault("MASTER_ADDR", node[0] if node else "127.0.0.1")
    os.environ.update(RANK=os.environ["SLURM_PROCID"], WORLD_SIZE=str(world),
                      LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"))
    torch.distributed.init_process_group("gloo")
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False,
                                 find_unused_parameters=False)
    return world


def _start_hook_cls():
    from mmengine.hooks import Hook

    class AttemptStartHook(Hook):
        """Every rank says where it starts (mmengine's logger speaks for rank 0 only)."""

        def __init__(self, rank: int, world: int) -> None:
            self.rank, self.world = rank, world

        def before_train(self, runner) -> None:
            print(f"[reproduce] rank {self.rank}/{self.world} starts at iter {runner.iter} "
                  f"(MASTER_PORT={os.environ.get('MASTER_PORT', '-')})", flush=True)

    return AttemptStartHook


def run_training(payload: Payload, requeue_signal: int | None = None,
                 interruptions: tuple[type[BaseException], ...] = ()) -> dict:
    """Train one run end to end; returns its final metrics. Safe to call again after a kill.

    1. A run of this config already finished (and evaluated) is not trained again.
    2. Rank 0 claims the run's work dir (``RunLock``): a job that finds it held by a live
       job returns ``{HELD: holder}`` untrained. It opens the run's MLflow run: the
       unsettled one of an earlier attempt, or a new one.
    3. The config is loaded and preflighted on this job's device before any iteration.
    4. Training resumes from the work dir's last checkpoint, if any; a resume past the
       last iteration that never evaluated evaluates now.
    5. Rank 0 logs the COCO metrics, the heads' consistency and Table 7's measurements (and,
       for a profile with an unlabeled test split, its detections file for COCO's server),
       then ends the run FINISHED.
    Any failure ends the run FAILED (KILLED for an interruption) with its error.

    ``requeue_signal``: the signal the backend requeues on (a checkpoint is saved when it
    comes, ``save_on_signal``); ``interruptions``: the backend's exceptions that mean the job
    was stopped from outside, not that the run failed.
    """
    from musu.train import CheckpointIOError, load_config, make_runner

    rank = slurm_rank()
    if payload.torch_home:  # the weights cache `reproduce run` filled: jobs never download
        os.environ["TORCH_HOME"] = payload.torch_home
    tracker = tracking.Tracker(payload.tracking_uri, rank=rank)
    from reproduce.node.fingerprint import code_fingerprint, data_fingerprint, library_versions, stale_because
    code, libraries = code_fingerprint(), library_versions()
    data = data_fingerprint(payload.data_root, payload.options) if payload.data_root else None
    # 1. A job SLURM requeues after it already finished (a requeue racing the job's last
    # seconds) must not train, or log, a second time; a rerun of a stale run
    # (`run --rerun-stale`) trains unless a run with today's code and data has finished.
    def finished():
        done = tracking.finished_run(tracker.runs_of(payload.profile, payload.config_hash))
        if done is not None and (not payload.rerun_of or not stale_because(
                tracking.tracked([done]), code, data, libraries if payload.stale_libraries else None)):
            return done
        return None
    found_meanwhile: list = []  # the finished run the lease's claim found (rank 0 claims)

    def finished_id() -> str | None:
        done = finished()
        if done is not None:
            found_meanwhile.append(done)
        return done.run_id if done is not None else None
    done = finished()
    if done is not None:
        print(f"[reproduce] {payload.config_hash} already finished (MLflow run {done.run_id}); nothing to train",
              flush=True)
        return dict(done.metrics)
    # 2. One live job per run: a second job of this config (a resubmission racing a requeue,
    # a `run` killed between sbatch and its record) leaves the run to the job that holds it.
    work_dir = Path(payload.work_dir)
    lock = RunLock(work_dir)
    if not _rank0_decides(work_dir, rank, "claim", lock.acquire):
        holder = lock.holder()
        print(f"[reproduce] {payload.config_hash} is being trained by {holder}; this job exits without training",
              flush=True)
        return {HELD: holder}
    # ... and across work dirs logging to one store: a claim in MLflow (``run_lease``).
    slurm_job = slurm_job_id()
    lease = Lease(tracker, payload.profile, payload.config_hash, payload.work_dir,
                  who=f"{'SLURM job ' + slurm_job if slurm_job else 'local job'} on {socket.gethostname()} "
                      f"(pid {os.getpid()})")
    run_id: str | None = None  # rank 0's; the other ranks log nothing
    refused: list[str] = []

    def claim() -> bool:
        nonlocal run_id
        # before opening: a job that leaves sets no old run RUNNING and makes no run
        who = lease.acquire(done=finished_id)
        if who is not None:
            refused.append(who)
            return False
        try:
            run_id = tracker.open_run(payload.profile, payload.config_hash, _run_tags(payload), payload.run_name)
            lease.hold(run_id)
        except BaseException:
            lease.release()  # a generation taken and never trained under blocks nobody for FRESH_S
            raise
        return True

    if not _rank0_decides(work_dir, rank, "lease", claim):
        if lease.finished_meanwhile is not None:
            print(f"[reproduce] {payload.config_hash} finished meanwhile (MLflow run {lease.finished_meanwhile}); "
                  "nothing to train", flush=True)
            return dict(found_meanwhile[-1].metrics) if found_meanwhile else {}
        who = refused[0] if refused else "a job of another work dir"
        print(f"[reproduce] {payload.config_hash} is being trained by {who}, which logs to the same store; this "
              "job exits without training", flush=True)
        return {HELD: who}
    if requeue_signal is not None:
        _note_requeue(requeue_signal, lease)
    heartbeat = Heartbeat(lease, run_id).__enter__()  # every phase below, evaluation and measurement too
    try:
        tracker.tag(run_id, {tracking.TAG_STATE: "running", tracking.TAG_CODE: code, tracking.TAG_DATA: data,
                             tracking.TAG_LIBS: libraries,
                             tracking.TAG_JOB: slurm_job, tracking.TAG_PID: None if slurm_job else str(os.getpid())})
        # 3. A CPU-only mmcv fails here in seconds, not at the first evaluation after 90k iterations.
        cfg = load_config(payload.config, payload.options, payload.config_dirs, data_root=payload.data_root or None)
        checks = preflight.require(cfg, gpus=payload.gpus)
        tracker.tag(run_id, {tracking.TAG_DEVICE: checks[0].detail,
                             tracking.TAG_PREFLIGHT: "; ".join(c.line() for c in checks)})
        resolved_path = work_dir / "resolved_config.py"
        cfg.dump(str(resolved_path))
        tracker.log_params(run_id, tracking.flatten(cfg.to_dict()))
        tracker.log_artifact(run_id, resolved_path)
        cfg.val_evaluator["outfile_prefix"] = str(work_dir / "coco_eval")
        # An unlabeled test split (COCO test-dev): its detections, in the COCO evaluation server's
        # format and file name, are written after the validation (mmdet's CocoMetric, format_only).
        testdev = cfg.test_evaluator.get("format_only", False)
        if testdev:
            cfg.test_evaluator["outfile_prefix"] = str(work_dir / "test-dev")
        world = setup_distributed(payload, cfg)
        tracker.log_params(run_id, {"effective_batch_size": str(world * int(cfg.train_dataloader.batch_size))})
        # 4.
        from musu.train import has_checkpoint  # rank 0 checks (and repairs) the checkpoints
        runner, capture = make_runner(cfg, work_dir, resume=_rank0_decides(work_dir, rank, "resume",
                                                                            lambda: has_checkpoint(work_dir)),
                                      launcher=payload.launcher)
        runner.register_hook(_start_hook_cls()(rank, world))
        if requeue_signal is not None:
            from reproduce.node.save_on_signal import SaveOnSignalHook
            # Half the warning time to end the iteration in flight; the rest to save and requeue.
            runner.register_hook(SaveOnSignalHook(requeue_signal,
                                                  grace_s=min(120.0, float(payload.signal_delay_s) / 2)))
        interval = int(cfg.default_hooks.get("logger", {}).get("interval", 50))
        runner.register_hook(_mlflow_hook_cls()(tracker, run_id, interval, lease))
        from musu.models.consistency_hook import HeadConsistencyHook
        maps = work_dir / "consistency_maps.png"  # Figure 1 for this run, redrawn at each evaluation
        consistency = HeadConsistencyHook(lambda result, it: tracker.log(run_id, metrics=consistency_metrics(result),
                                                                          step=it), maps_path=str(maps))
        runner.register_hook(consistency)
        runner.train()
        if not capture.evaluated:
            # Resumed from the checkpoint at max_iters (the previous attempt stopped
            # after saving it, before its evaluation logged anything): mmengine's
            # loop then has nothing to train and evaluates nothing. Evaluate here,
            # on every rank, or the run would end FINISHED without a number.
            print(f"[reproduce] rank {rank}: resumed past the last iteration without an evaluation; evaluating",
                  flush=True)
            runner.val_loop.run()
        if testdev:
            runner.test()  # every rank: the test loop gathers the detections across them
        if rank != 0:
            return {}
        # 5. COCO reports -1 for an area range without objects: no number, not -100.
        columns = coco_keys()
        metrics = {columns[k]: 100.0 * v for k, v in capture.metrics.items() if k in columns and v >= 0}
        if "AP" not in metrics:
            raise RuntimeError(f"the evaluation logged no AP (its metrics: {sorted(capture.metrics) or 'none'}); "
                               "the run is not finished")
        if consistency.result is not None:
            metrics.update(consistency_metrics(consistency.result))
        metrics.update(_measure(runner, cfg, payload.fps_images, payload.fps_warmup))
        tracker.log(run_id, metrics=metrics)
        if testdev:
            submit = work_dir / f"detections_test-dev2017_{payload.config_hash}_results.json"
            os.replace(work_dir / "test-dev.bbox.json", submit)
            tracker.log_artifact(run_id, submit)
            tracker.tag(run_id, {tracking.TAG_TESTDEV: str(submit)})
        (work_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        for path in [work_dir / "metrics.json", *work_dir.glob("coco_eval*.json"), *([maps] if maps.exists() else [])]:
            tracker.log_artifact(run_id, path)
        heartbeat.__exit__()
        if lease.lost is not None:  # deposed during evaluation: the run is the new holder's, not ended here
            raise LeaseLost(f"another work dir's job ({lease.lost}) may hold this config now: this job's "
                            "lease was lost during evaluation, so it ends nothing")
        tracker.end(run_id, "FINISHED", {tracking.TAG_STATE: "finished"})
        lease.release()
        return metrics
    except BaseException as exc:
        heartbeat.__exit__()
        lease.release(requeued=lease.requeue_asked)
        tail = exception_chain(exc) + "\n" + "".join(traceback.format_exception(exc))[-2000:]
        # a requeue ends the job with sys.exit: an interruption, like a Ctrl-C or the backend's giving up
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit, *interruptions))
        # The storage failed, not the run: `status` reads it killed and `run` resubmits it.
        state = "storage" if isinstance(exc, CheckpointIOError) else "interrupted" if interrupted else "failed"
        if isinstance(exc, LeaseLost) or lease.lost is not None:
            raise  # the run is the new holder's now: this job ends nothing of it
        try:
            tracker.end(run_id, "KILLED" if interrupted else "FAILED",
                        {tracking.TAG_ERROR: tail, tracking.TAG_STATE: state})
        except Exception:  # noqa: BLE001 - the original error matters more
            pass
        raise

