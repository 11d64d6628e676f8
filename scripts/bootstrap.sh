#!/usr/bin/env bash
# Creates .venv/ in the repository root with everything the suite needs.
# Idempotent: when nothing it depends on changed since its last successful
# run, it returns in well under a second.
#
#   scripts/bootstrap.sh             the Python environment; mmcv's CUDA ops when a CUDA
#                                    toolkit and a CUDA build of torch are found, else CPU ops
#   scripts/bootstrap.sh --cuda      CUDA ops or a one-line error (no toolkit, CPU-only torch)
#   scripts/bootstrap.sh --cpu       CPU ops even where CUDA is found
#   scripts/bootstrap.sh --all-ops   every mmcv op (the full build: about 15 minutes on 2 cores for CPU ops,
#                                    an hour or more for CUDA ops); by default only the ops the suite's
#                                    configs call are built (scripts/mmcv_subset.py: about 2 minutes), and
#                                    any other op raises one line naming --all-ops
#   scripts/bootstrap.sh --print-key prints the mmcv build key and its wheel folder, and exits
#   scripts/bootstrap.sh --system    also the Debian packages the *tests* use (local SLURM,
#                                    MariaDB, pdflatex, Chromium): installed as root, else skipped
#                                    with one line. The main job needs none of them.
# Environment:
#   MUSU_TORCH            pip requirement for torch when .venv has none (default torch==2.13.0);
#                         a torch already in .venv within mmdet 3.3's range is kept
#   CUDA_HOME, TORCH_CUDA_ARCH_LIST   the toolkit and the architectures to build for
#                         (default: the GPUs visible here, else 8.0;9.0 (+7.0 before CUDA 13))
#   MUSU_MMCV_OPS         the ops to build instead of the suite's (comma-separated mmcv op names)
#   MUSU_WHEEL_CACHE      where built mmcv wheels are kept, one folder per build key (the op set is
#                         part of the key)
#                         (default ~/.cache/musu-wheels)
#   BOOTSTRAP_QUIET=1     print only errors;  BOOTSTRAP_FORCE=1  redo every step
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.bootstrap-stamp"
MMCV=2.1.0
CACHE="${MUSU_WHEEL_CACHE:-$HOME/.cache/musu-wheels}"
T0=$SECONDS
say() { [ "${BOOTSTRAP_QUIET:-0}" = 1 ] || echo "[bootstrap] $((SECONDS - T0)) s: $*" >&2; }
die() { echo "[bootstrap] error: $*" >&2; exit 2; }

MODE=auto SYSTEM=0 ALLOPS=0 PRINT_KEY=0
for arg in "$@"; do
    case "$arg" in
        --cuda) MODE=cuda ;;
        --cpu) MODE=cpu ;;
        --system) SYSTEM=1 ;;
        --all-ops) ALLOPS=1 ;;
        --print-key) PRINT_KEY=1 ;;
        *) die "unknown option $arg (use --cuda, --cpu, --all-ops, --system or --print-key)" ;;
    esac
done
[ "$ALLOPS" = 0 ] || [ -z "${MUSU_MMCV_OPS:-}" ] || die "--all-ops and MUSU_MMCV_OPS=$MUSU_MMCV_OPS ask for two op sets; unset MUSU_MMCV_OPS or drop --all-ops"

# A CUDA toolkit: nvcc on PATH, or CUDA_HOME with bin/nvcc.
NVCC=""
if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then NVCC="$CUDA_HOME/bin/nvcc"
elif command -v nvcc >/dev/null; then NVCC="$(command -v nvcc)"; fi
[ "$MODE" != cuda ] || [ -n "$NVCC" ] || die "--cuda: no CUDA toolkit found (nvcc not on PATH, CUDA_HOME unset); load your cluster's CUDA module or set CUDA_HOME, or drop --cuda for CPU ops"

# Two stamps, so that the test command (--system) and the main job (without it) each find the
# other's work done: the Python environment's, and the Debian packages' (a superset need, not a
# different environment). Before, one stamp keyed by --system made every switch between
# scripts/test and scripts/reproduce re-check the whole environment (about 20 s).
want="$(cat pyproject.toml scripts/bootstrap.sh scripts/mmcv_subset.py | sha256sum | cut -d' ' -f1)"
want="$want $MODE $ALLOPS ${MUSU_MMCV_OPS:-} ${NVCC:-nonvcc} ${TORCH_CUDA_ARCH_LIST:-} ${MUSU_TORCH:-}"
SYSSTAMP="$VENV/.system-stamp"
want_sys="$(cat scripts/system-packages.txt scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
done_env() { [ "${BOOTSTRAP_FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; }
done_sys() {  # installed, or skipped by a user who still cannot install them (said once, not at every run)
    [ "$SYSTEM" = 0 ] && return 0
    { [ "${BOOTSTRAP_FORCE:-0}" != 1 ] && [ -f "$SYSSTAMP" ]; } || return 1
    case "$(cat "$SYSSTAMP")" in
        "$want_sys") return 0 ;;
        "$want_sys skipped") [ "$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null ;;
        *) return 1 ;;
    esac
}
if [ "$PRINT_KEY" = 0 ] && done_env && done_sys; then
    exit 0
fi
# One bootstrap at a time per checkout: two commands started together (two terminals, two test
# workers) would otherwise both pip-install into .venv/. The second waits, then finds the work done.
if [ "$PRINT_KEY" = 0 ] && command -v flock >/dev/null; then
    mkdir -p "$VENV"
    exec 9>"$VENV/.bootstrap-lock"
    flock 9
    if done_env && done_sys; then exit 0; fi
fi

# --- Debian packages: only for the tests (--system) ----------------------------------------------
if [ "$SYSTEM" = 1 ] && ! done_sys; then
    sys_ok=1
    missing=()
    while read -r pkg; do
        [ -z "$pkg" ] || [ "${pkg#\#}" != "$pkg" ] && continue
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done < scripts/system-packages.txt
    if [ "${#missing[@]}" -gt 0 ]; then
        SUDO=""
        [ "$(id -u)" = 0 ] || { sudo -n true 2>/dev/null && SUDO="sudo"; } || SUDO="none"
        if [ "$SUDO" = none ] || ! command -v apt-get >/dev/null; then
            echo "[bootstrap] skipped Debian packages ${missing[*]}: not root (or no apt-get); the tests that need the local SLURM cluster, pdflatex or Chromium are skipped" >&2
            sys_ok=0
        else
            say "installing Debian packages for the tests: ${missing[*]}"
            export DEBIAN_FRONTEND=noninteractive
            # (fd 9, the lock, closed: a service a package starts must not hold it for its lifetime)
            $SUDO apt-get update -qq >/dev/null 9>&-
            $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 9>&-
        fi
    fi
    # (skipped packages are stamped as skipped: a later run that can install them, as root, does)
    mkdir -p "$VENV"
    if [ "$sys_ok" = 1 ]; then echo "$want_sys" > "$SYSSTAMP"; else echo "$want_sys skipped" > "$SYSSTAMP"; fi
fi
[ "$PRINT_KEY" = 1 ] || ! done_env || exit 0

# --- Python environment -------------------------------------------------------------------------
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check -q)
# (--print-key only reads: it installs nothing that is there already)
[ "$PRINT_KEY" = 1 ] || "${PIP[@]}" install --upgrade pip >/dev/null
# torch: keep one already installed in mmdet 3.3's range (a cluster's own CUDA
# build); otherwise the pinned default, whose CPU wheel lies on the CI machine.
if ! "$VPY" - <<'EOF' 2>/dev/null
import torch
from packaging.version import Version
v = Version(torch.__version__.split("+")[0])
raise SystemExit(0 if Version("2.0") <= v < Version("2.14") else 1)
EOF
then
    say "installing ${MUSU_TORCH:-torch==2.13.0}"
    # shellcheck disable=SC2086
    "${PIP[@]}" install ${MUSU_TORCH:-torch==2.13.0}
fi
[ "$PRINT_KEY" = 1 ] || "${PIP[@]}" install wheel ninja numpy packaging

TORCH_CUDA="$("$VPY" -c 'import torch; print(torch.version.cuda or "")')"
TORCH_VER="$("$VPY" -c 'import torch; print(torch.__version__.split("+")[0])')"
if [ "$MODE" = cuda ] && [ -z "$TORCH_CUDA" ]; then
    die "--cuda: torch $TORCH_VER in .venv is a CPU-only build; install a CUDA build of torch (MUSU_TORCH='torch==X --index-url ...') or drop --cuda"
fi
USE_CUDA=0
if [ "$MODE" = cuda ] || { [ "$MODE" = auto ] && [ -n "$NVCC" ] && [ -n "$TORCH_CUDA" ]; }; then USE_CUDA=1; fi

# The build key: what a wheel was built for. A wheel is reused only for the same key.
PYTAG="$("$VPY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
if [ "$USE_CUDA" = 1 ]; then
    export CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$NVCC")")}"
    NVCC_VER="$("$NVCC" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')"
    [ "${NVCC_VER%%.*}" = "${TORCH_CUDA%%.*}" ] || die "nvcc is CUDA $NVCC_VER but torch $TORCH_VER was built with CUDA $TORCH_CUDA; load a CUDA $TORCH_CUDA toolkit (the major versions must match)"
    if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
        TORCH_CUDA_ARCH_LIST="$("$VPY" -c 'import torch; print(";".join(sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})))' 2>/dev/null || true)"
        if [ -z "$TORCH_CUDA_ARCH_LIST" ]; then
            TORCH_CUDA_ARCH_LIST="8.0;9.0"
            [ "${TORCH_CUDA%%.*}" -ge 13 ] || TORCH_CUDA_ARCH_LIST="7.0;8.0;9.0"
        fi
    fi
    export TORCH_CUDA_ARCH_LIST
    KEY="mmcv$MMCV-torch$TORCH_VER-cu$TORCH_CUDA-sm${TORCH_CUDA_ARCH_LIST//[;. ]/_}"
else
    KEY="mmcv$MMCV-torch$TORCH_VER-cpu"
fi
# the op set: every op, or the subset scripts/mmcv_subset.py names (an unknown op is refused
# when the sources are trimmed, before anything is built)
if [ "$ALLOPS" = 1 ]; then OPSKEY=allops
else OPSKEY="$("$VPY" scripts/mmcv_subset.py --key ${MUSU_MMCV_OPS:+--ops "$MUSU_MMCV_OPS"})"; fi
KEY="$KEY-$OPSKEY-$PYTAG"
if [ "$PRINT_KEY" = 1 ]; then echo "$KEY $CACHE/$KEY"; exit 0; fi
say "mmcv build key: $KEY"

installed_key="$(cat "$VENV/.mmcv-build" 2>/dev/null || true)"
if [ "$installed_key" != "$KEY" ] || ! "$VPY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV'" 2>/dev/null; then
    WHEELS="$CACHE/$KEY"
    mkdir -p "$WHEELS"
    if ! ls "$WHEELS"/mmcv-$MMCV-*.whl >/dev/null 2>&1 && [ "$USE_CUDA" = 1 ] && [ "$ALLOPS" = 1 ]; then
        # OpenMMLab's index has prebuilt CUDA wheels (every op) for older torch releases only.
        index="https://download.openmmlab.com/mmcv/dist/cu${TORCH_CUDA//./}/torch${TORCH_VER%.*}.0/index.html"
        "${PIP[@]}" download --no-deps --only-binary=:all: -d "$WHEELS" -f "$index" --timeout 30 "mmcv==$MMCV" \
            >/dev/null 2>&1 && say "prebuilt mmcv $MMCV for torch $TORCH_VER / CUDA $TORCH_CUDA from OpenMMLab's index" \
            || say "no prebuilt mmcv $MMCV for torch $TORCH_VER / CUDA $TORCH_CUDA: building from source"
    fi
    if ! ls "$WHEELS"/mmcv-$MMCV-*.whl >/dev/null 2>&1; then
        "${PIP[@]}" install 'setuptools<70' 2>/dev/null
        if [ "$ALLOPS" = 1 ]; then
            what="every op"; TARGET="mmcv==$MMCV"
            if [ "$USE_CUDA" = 1 ]; then took="an hour or more on 2 cores"; else took="about 15 minutes on 2 cores"; fi
        else
            # the sdist, trimmed to the op subset, built from its folder
            # (the sdist is kept beside the wheels: another op set needs no second download)
            SDIST="$CACHE/sdist"
            [ -f "$SDIST/mmcv-$MMCV.tar.gz" ] || "${PIP[@]}" download --no-deps --no-binary :all: \
                --no-build-isolation -d "$SDIST" "mmcv==$MMCV" >/dev/null
            SRC="$(mktemp -d)"; trap 'rm -rf "$SRC"' EXIT
            tar -xzf "$SDIST/mmcv-$MMCV.tar.gz" -C "$SRC"
            "$VPY" scripts/mmcv_subset.py "$SRC/mmcv-$MMCV" ${MUSU_MMCV_OPS:+--ops "$MUSU_MMCV_OPS"}
            ops="${OPSKEY#ops-}"; what="the ops ${ops//-/, } only (--all-ops builds every op)"; TARGET="$SRC/mmcv-$MMCV"
            if [ "$USE_CUDA" = 1 ]; then took="only their CUDA files"; else took="about 2 minutes on 2 cores"; fi
        fi
        if [ "$USE_CUDA" = 1 ]; then
            say "building mmcv $MMCV with CUDA $TORCH_CUDA kernels for sm $TORCH_CUDA_ARCH_LIST, $what ($took; once per key)"
        else
            say "building mmcv $MMCV with CPU ops, $what ($took; once per key)"
        fi
        # mmcv 2.1.0 ships only as source; its setup.py imports pkg_resources
        # (gone from setuptools >= 70) and torch, hence the pinned setuptools
        # and no build isolation. --no-cache-dir: pip's own wheel cache is
        # keyed by the source alone and would hand back a wheel built for
        # another torch, CUDA, architecture or op set. Its log goes to a file, shown on failure.
        LOG="$WHEELS/build.log"
        MMCV_WITH_OPS=1 FORCE_CUDA="$USE_CUDA" MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" wheel --no-cache-dir \
            --no-build-isolation --no-deps -w "$WHEELS" "$TARGET" >"$LOG" 2>&1 \
            || { tail -n 40 "$LOG" >&2; die "the mmcv build failed (the whole log: $LOG)"; }
    fi
    "${PIP[@]}" install --no-deps --force-reinstall "$WHEELS"/mmcv-$MMCV-*.whl
    echo "$KEY" > "$VENV/.mmcv-build"
fi
say "installing the project and its dependencies"
"${PIP[@]}" install -e ".[test]"
"$VPY" -c "import torch, mmcv.ops, mmdet, mmengine, musu.models" \
    || die "the environment does not import; rerun with BOOTSTRAP_FORCE=1"
# every op the suite calls, run once on tiny tensors (the preflight's own checks)
say "checking the imports and every mmcv op the suite calls"
"$VPY" -m reproduce.node.preflight --ops >&2 \
    || die "an mmcv op the suite needs does not run (key $KEY); remove $WHEELS and rerun"
if [ "$USE_CUDA" = 1 ]; then
    # read the library rather than call mmcv.ops.get_compiling_cuda_version(): that call
    # crashed the interpreter on an H200 node (torch 2.11.0+cu130, gcc 13) while the ops worked
    "$VPY" -c "import glob, os, mmcv; so = glob.glob(os.path.join(os.path.dirname(mmcv.__file__), '_ext*.so')); \
assert so and b'NMSCUDAKernelLauncher' in open(so[0], 'rb').read(), so" \
        || die "mmcv's ops were built without CUDA (key $KEY); remove $WHEELS and rerun with --cuda"
fi
echo "$want" > "$STAMP"
say "ready: $VENV ($KEY)"
