#!/usr/bin/env bash
# The whole GPU story in one script, for one H100 or H200 (under 8 minutes once
# mmcv's CUDA wheel is built or carried in MUSU_WHEEL_CACHE):
#   1. scripts/bootstrap.sh --cuda                  (mmcv with CUDA ops; the build is keyed and cached)
#   2. reproduce check all --profile gpu-synthetic  (NMS, DCNv2, sigmoid focal loss on the GPU, data, tracking)
#   3. 200 iterations of MuSu R-50 at full resolution on the synthetic set through `reproduce run`,
#      ending in a COCO evaluation and Table 7's params/FLOPs/FPS, tracked in MLflow
#   4. benchmarks/assignment.py, train_step.py (800x1333), inference.py (FPS, 200 images; then with the
#      candidate cap per level scaled by #A) and nms_pre.py (boxes reaching NMS, post-processing) on cuda
#
#   benchmarks/gpu_check.sh [OUT]        figures and logs in OUT (default work_dirs/gpu-check)
#   GPU_CHECK_DEVICE=cpu benchmarks/gpu_check.sh OUT   the same steps on CPU at toy sizes: checks
#                                        the script itself on a machine without a GPU (the test suite does)
#   GPU_CHECK_PYTHON=python3 GPU_CHECK_BOOTSTRAP=0     use a python prepared by hand instead of
#                                        bootstrapping .venv (benchmarks/gpu_node_env.sh, for nodes without PyPI)
#   GPU_CHECK_STEPS=run                  only some of the steps: check, run, bench (default all three)
# A step that fails is reported and the next one runs; the exit status is the number of failed steps.
# The figures go into docs/benchmarks.md with the card's name (OUT/gpu.txt).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$(mkdir -p "${1:-work_dirs/gpu-check}" && cd "${1:-work_dirs/gpu-check}" && pwd)"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
PY="${GPU_CHECK_PYTHON:-$ROOT/.venv/bin/python}"
BOOTSTRAP="${GPU_CHECK_BOOTSTRAP:-1}"
STEPS=",${GPU_CHECK_STEPS:-check,run,bench},"
want() { [[ "$STEPS" == *",$1,"* ]]; }
T0=$(date +%s)
FAILED=0
step() { echo "[gpu-check] $(( $(date +%s) - T0 )) s: $*" | tee -a "$OUT/summary.txt" >&2; }
failed() { FAILED=$((FAILED + 1)); step "FAILED (exit $1): $2"; }
reproduce() { "$PY" -m reproduce.cli "$@"; }
: > "$OUT/summary.txt"

if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
    if [ "$BOOTSTRAP" = 1 ]; then
        step "bootstrap with CUDA ops"
        scripts/bootstrap.sh --cuda || { failed $? "bootstrap"; exit 1; }
    fi
    SIZE=(800 1333) IMAGES=200 REPEATS=10 PROFILE=gpu-synthetic
else
    echo "cpu (dry run of the script; no GPU figures)" > "$OUT/gpu.txt"
    if [ "$BOOTSTRAP" = 1 ]; then
        step "bootstrap (CPU dry run)"
        scripts/bootstrap.sh || { failed $? "bootstrap"; exit 1; }
    fi
    SIZE=(128 160) IMAGES=3 REPEATS=1 PROFILE=gpu-check-cpu  # every step once: typos and flags, not figures
fi

# A sweeps folder of this check's own: the suite's specs and profiles, one
# MuSu row, and (dry run only) the GPU profile shrunk to CPU size.
SWEEPS="$OUT/sweeps"
rm -rf "$SWEEPS" && cp -r sweeps "$SWEEPS"
cat > "$SWEEPS/gpucheck.yaml" <<'EOF'
table: gpucheck
title: MuSu R-50, 200 iterations on the synthetic set at full resolution
columns: [AP, AP50, AP75, params, flops, fps]
defaults: {method: musu, backbone: r50, schedule: 1x}
rows:
  - {name: musu, label: MuSu R-50}
EOF
if [ "$DEVICE" != cuda ]; then
    "$PY" - "$SWEEPS/profiles" <<'EOF'
import sys, yaml
from pathlib import Path
d = Path(sys.argv[1])
p = yaml.safe_load((d / "gpu-synthetic.yaml").read_text())
p.update(name="gpu-check-cpu", gpus=0)
p.pop("images_per_gpu", None)  # a GPU's batch: refused with gpus: 0 (the batch is set in cfg_options below)
p["dataset"].update(root="data/synthetic-cpu-check",
                    generate=dict(num_train=4, num_val=2, image_size=128, min_size=16, max_size=60, seed=0))
p["cfg_options"].update({"train_cfg.max_iters": 4, "train_cfg.val_interval": 4,
                         "default_hooks.checkpoint.interval": 2, "default_hooks.logger.interval": 2,
                         "train_dataloader.batch_size": 2,
                         # the configs' 1333x800 resize would blow 128 px images up for a CPU
                         "train_dataloader.dataset.pipeline.2.scale": 160,
                         "val_dataloader.dataset.pipeline.1.scale": 160,
                         "test_dataloader.dataset.pipeline.1.scale": 160,
                         "param_scheduler": [{"type": "LinearLR", "start_factor": 0.3333333, "by_epoch": False,
                                              "begin": 0, "end": 2}]})
(d / "gpu-check-cpu.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
EOF
fi
COMMON=(--profile "$PROFILE" --sweeps "$SWEEPS" --workdir "$OUT/work")

if want check; then
step "reproduce check (table1, table6: NMS, DCNv2, focal loss on $DEVICE)"
reproduce check table1,table6 "${COMMON[@]}" 2>&1 | tee "$OUT/check.txt" || failed $? "reproduce check"
fi

if want run; then
step "MuSu R-50 on the synthetic set through reproduce run"
reproduce run gpucheck "${COMMON[@]}" --poll 5 2>&1 | tee "$OUT/run.txt" || failed $? "reproduce run"
reproduce report gpucheck "${COMMON[@]}" --format md | tee "$OUT/report.md" || failed $? "reproduce report"
reproduce status gpucheck "${COMMON[@]}" --json > "$OUT/status.json" || failed $? "reproduce status"
fi

# the benchmarks last: the run's figures matter most where the machine's time is short
if want bench; then
step "assignment benchmark"
"$PY" benchmarks/assignment.py --device "$DEVICE" --repeats "$REPEATS" 2>&1 | tee "$OUT/assignment.txt" \
    || failed $? "assignment benchmark"
step "training-step benchmark at ${SIZE[*]}"
(cd benchmarks && "$PY" train_step.py --device "$DEVICE" --size "${SIZE[@]}" --repeats "$REPEATS") 2>&1 \
    | tee "$OUT/train_step.txt" || failed $? "training-step benchmark"
step "inference (FPS) benchmark at ${SIZE[*]}, $IMAGES images"
(cd benchmarks && "$PY" inference.py --device "$DEVICE" --size "${SIZE[@]}" --images "$IMAGES") 2>&1 \
    | tee "$OUT/inference.txt" || failed $? "inference benchmark"
step "inference (FPS) with the candidate cap scaled by #A, and post-processing alone (Table 7's trend)"
(cd benchmarks && "$PY" inference.py --device "$DEVICE" --size "${SIZE[@]}" --images "$IMAGES" --nms-pre-per-anchor) \
    2>&1 | tee "$OUT/inference_nms_pre.txt" || failed $? "inference benchmark, cap per anchor"
"$PY" benchmarks/nms_pre.py --device "$DEVICE" --size "${SIZE[@]}" --repeats "$REPEATS" 2>&1 \
    | tee "$OUT/nms_pre.txt" || failed $? "nms_pre benchmark"
fi

step "done, $FAILED failed steps: figures in $OUT (gpu.txt, check.txt, assignment.txt, train_step.txt, inference.txt, inference_nms_pre.txt, nms_pre.txt, report.md)"
exit "$FAILED"
