"""Orchestration overhead: plan, submit, report.

    .venv/bin/python benchmarks/orchestration.py [--skip-submit]

  * ``reproduce plan all --profile paper`` (wall time of the command);
  * ``reproduce run all --no-wait`` of the paper profile's 26 runs to the local
    SLURM cluster (cluster/local-slurm.sh must be up), submitted held
    (``sbatch --hold``) and cancelled afterwards, so nothing trains;
  * ``reproduce report all`` over an MLflow SQLite store holding 1,000 runs
    (the paper profile's 26 plus 974 others, written here for the load test;
    the report's numbers in this benchmark are load, not results).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "reproduce.cli"]


def timed(cmd, cwd, repeats=3):
    best = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        best.append(time.perf_counter() - t)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")
    return min(best), sorted(best)[len(best) // 2]


def bench_sweeps(tmp: Path) -> Path:
    """The suite's specs with a `bench` profile: the paper's runs on a tiny COCO-format set, no GPUs."""
    import yaml

    from musu.data import SyntheticSpec, generate
    sweeps = tmp / "sweeps"
    shutil.copytree(ROOT / "sweeps", sweeps)
    prof = yaml.safe_load((sweeps / "profiles" / "paper.yaml").read_text())
    data = generate(tmp / "coco", SyntheticSpec(num_train=4, num_val=2, image_size=64, min_size=8, max_size=30))
    prof.update(name="bench", gpus=0)
    prof.pop("images_per_gpu", None)  # a GPU's batch: refused with gpus: 0
    prof["dataset"] = dict(type="coco", root=str(data), train_ann="annotations/train.json",
                           val_ann="annotations/val.json", train_img="train/", val_img="val/")
    (sweeps / "profiles" / "bench.yaml").write_text(yaml.safe_dump(prof))
    return sweeps


def fill_store(uri: str, plan: dict, total: int) -> None:
    from mlflow.entities import Metric

    from reproduce import tracking
    cl = tracking.client(uri)
    exp = tracking.Tracker(uri).experiment(plan["profile"])
    hashes = [r["config_hash"] for r in plan["runs"]] + [f"other{i:04d}" for i in range(total - len(plan["runs"]))]
    for i, h in enumerate(hashes):
        run = cl.create_run(exp, tags={tracking.TAG_HASH: h, tracking.TAG_PROFILE: plan["profile"]})
        cl.log_batch(run.info.run_id, metrics=[Metric(k, 30.0 + (i % 10), 0, 0)
                                               for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")])
        cl.set_terminated(run.info.run_id, "FINISHED")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-submit", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.node()} ({platform.machine()}), python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sweeps = bench_sweeps(tmp)
        best, med = timed([*CLI, "plan", "all", "--profile", "paper", "--json"], tmp)
        print(f"| reproduce plan all --profile paper | {best:.2f} s (median {med:.2f} s) |")
        plan = json.loads(subprocess.run([*CLI, "plan", "all", "--profile", "bench", "--sweeps", str(sweeps),
                                          "--json"], cwd=tmp, capture_output=True, text=True).stdout)
        if not args.skip_submit:
            cluster = tmp / "hold.yaml"
            cluster.write_text("partition: debug\ncpus_per_task: 1\nmem_gb: 1\ntime_min: 10\n"
                               "array_parallelism: 4\nsbatch_extra: {hold: true}\n")
            t = time.perf_counter()
            out = subprocess.run([*CLI, "run", "all", "--profile", "bench", "--sweeps", str(sweeps), "--cluster",
                                  str(cluster), "--no-wait", "--workdir", str(tmp / "submit")], cwd=tmp,
                                 capture_output=True, text=True)
            took = time.perf_counter() - t
            jobs = json.loads((tmp / "submit" / ".reproduce" / "state" / "jobs.json").read_text())
            array_ids = {r["job_id"].split("_")[0] for r in jobs.values()}
            subprocess.run(["scancel", *array_ids])
            if out.returncode != 0:
                raise SystemExit(out.stderr[-2000:])
            print(f"| reproduce run all --profile paper --no-wait (local SLURM, {len(jobs)} runs, held) | "
                  f"{took:.2f} s |")
        uri = f"sqlite:///{tmp / 'store' / 'mlruns.db'}"
        (tmp / "store").mkdir()
        t = time.perf_counter()
        fill_store(uri, plan, 1000)
        print(f"(filling the store with 1,000 runs took {time.perf_counter() - t:.0f} s)")
        best, med = timed([*CLI, "report", "all", "--profile", "bench", "--sweeps", str(sweeps), "--format", "md",
                           "--tracking-uri", uri, "--workdir", str(tmp / "store")], tmp)
        print(f"| reproduce report all over 1,000 MLflow runs | {best:.2f} s (median {med:.2f} s) |")


if __name__ == "__main__":
    main()
