#!/usr/bin/env bash
# The GPU check's Python environment on a machine that reaches no package
# index (an offline compute node, a lent GPU box), over the python and torch
# that machine already has. Why not bootstrap.sh: it needs PyPI.
#
#   benchmarks/gpu_node_env.sh WHEELS PREFIX     then: source PREFIX/env.sh
#
# WHEELS holds the project's dependencies as wheels for that machine's python,
# made where PyPI is reachable, for example for a Python 3.12 node:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d WHEELS ...
# and mmcv's sdist (mmcv-2.1.0.tar.gz), which is built here against the node's
# torch with the detection ops only, on CPU and CUDA (scripts/mmcv_subset.py, as
# scripts/bootstrap.sh builds them; MMCV_CUDA_OPS=all builds every op). A wheel mmcv-2.1.0-*.whl in WHEELS is
# installed instead of building. Nothing is installed outside PREFIX.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -eq 2 ] || { echo "usage: $0 WHEELS PREFIX" >&2; exit 2; }
WHEELS="$(cd "$1" && pwd)"
mkdir -p "$2" && PREFIX="$(cd "$2" && pwd)"
PY="${GPU_CHECK_PYTHON:-python3}"
say() { echo "[gpu-node-env] $*" >&2; }

"$PY" -c 'import torch' 2>/dev/null || { say "error: $PY has no torch; set GPU_CHECK_PYTHON to the python that holds the node's torch"; exit 2; }
shopt -s nullglob
others=()
mmcv_wheel=()
for w in "$WHEELS"/*.whl; do
    case "$(basename "$w")" in mmcv-*) mmcv_wheel+=("$w") ;; *) others+=("$w") ;; esac
done
say "installing ${#others[@]} wheels into $PREFIX/site"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$PREFIX/site" "${others[@]}" "${mmcv_wheel[@]}"

if [ ${#mmcv_wheel[@]} -eq 0 ]; then
    sdist=("$WHEELS"/mmcv-2.1.0.tar.gz)
    [ ${#sdist[@]} -eq 1 ] || { say "error: neither an mmcv wheel nor mmcv-2.1.0.tar.gz in $WHEELS; add one (pip download --no-binary :all: --no-deps mmcv==2.1.0)"; exit 2; }
    rm -rf "$PREFIX/mmcv-2.1.0" && tar xzf "${sdist[0]}" -C "$PREFIX"
    if [ "${MMCV_CUDA_OPS:-}" != all ]; then
        "$PY" "$ROOT/scripts/mmcv_subset.py" "$PREFIX/mmcv-2.1.0" ${MMCV_CUDA_OPS:+--ops "$MMCV_CUDA_OPS"}
    fi
    arch="${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}"
    say "building mmcv 2.1.0 for torch $("$PY" -c 'import torch; print(torch.__version__)'), CUDA arch $arch, $(nproc) jobs (log: $PREFIX/mmcv-build.log)"
    t0=$(date +%s)
    # mmcv's setup.py imports pkg_resources, gone from setuptools 81: a setuptools wheel in WHEELS comes first
    if ! (cd "$PREFIX/mmcv-2.1.0" && PYTHONPATH="$PREFIX/site" MMCV_WITH_OPS=1 FORCE_CUDA=1 \
            TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            "$PY" setup.py build_ext --inplace) > "$PREFIX/mmcv-build.log" 2>&1; then
        grep -E "error|Error" "$PREFIX/mmcv-build.log" | head -20 >&2
        say "error: the mmcv build failed; the whole log is $PREFIX/mmcv-build.log"
        exit 1
    fi
    say "mmcv built in $(( $(date +%s) - t0 )) s"
    MMCV_PATH="$PREFIX/mmcv-2.1.0:"
fi
cat > "$PREFIX/env.sh" <<EOF
# made by benchmarks/gpu_node_env.sh: the project, mmcv and the carried wheels on top of the node's python
export PYTHONPATH="$ROOT:${MMCV_PATH:-}$PREFIX/site\${PYTHONPATH:+:\$PYTHONPATH}"
export GPU_CHECK_PYTHON="$PY" GPU_CHECK_BOOTSTRAP=0
EOF
. "$PREFIX/env.sh"
# NMS on the GPU rather than mmcv.ops.get_compiling_cuda_version(), which crashed the
# interpreter on an H200 node (torch 2.11.0+cu130, gcc 13) although the ops themselves ran
"$PY" -X faulthandler - <<'PY' >&2
import torch, mmcv, mmdet, mmengine, mlflow
from mmcv.ops import nms
line = f"[gpu-node-env] torch {torch.__version__} (CUDA {torch.version.cuda}), mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mlflow {mlflow.__version__}"
if torch.cuda.is_available():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], dtype=torch.float32, device="cuda")
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7], device="cuda"), 0.5)
    assert keep.tolist() == [0, 2], keep
    line += f"; mmcv NMS ran on {torch.cuda.get_device_name()}"
print(line)
PY
