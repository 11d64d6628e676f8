#!/usr/bin/env bash
# Creates .venv/ in the repository root with everything the suite needs.
# Idempotent: when pyproject.toml and this script are unchanged since the last
# successful run, it returns in well under a second.
#   BOOTSTRAP_QUIET=1   print only errors
#   BOOTSTRAP_FORCE=1   redo every step
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.bootstrap-stamp"
say() { [ "${BOOTSTRAP_QUIET:-0}" = 1 ] || echo "[bootstrap] $*" >&2; }

want="$(cat pyproject.toml scripts/bootstrap.sh scripts/system-packages.txt | sha256sum | cut -d' ' -f1)"
if [ "${BOOTSTRAP_FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi

# --- Debian packages (SLURM, MariaDB, TeX, Chromium) ---------------------------------------
missing=()
while read -r pkg; do
    [ -z "$pkg" ] || [ "${pkg#\#}" != "$pkg" ] && continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < scripts/system-packages.txt
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
        echo "[bootstrap] error: Debian packages missing (${missing[*]}) and not root: run 'sudo apt-get install ${missing[*]}' and retry" >&2
        exit 1
    fi
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python environment -------------------------------------------------------------------------
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip >/dev/null
# The CPU wheel of torch 2.13.0 lies on this disk; an unpinned torch would pull CUDA.
"${PIP[@]}" install torch==2.13.0 wheel ninja numpy packaging

if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
    # mmcv 2.1.0 ships only as source; its setup.py imports pkg_resources
    # (gone from setuptools >= 70) and torch, hence the pinned setuptools and
    # no build isolation. The built wheel is kept in $WHEELS (and pip's cache),
    # so the 9-minute build happens once per machine.
    WHEELS="${MUSU_WHEEL_CACHE:-$HOME/.cache/musu-wheels}"
    mkdir -p "$WHEELS"
    if ! ls "$WHEELS"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
        say "building mmcv 2.1.0 with CPU ops (about 9 minutes on 2 cores, once per machine)"
        "${PIP[@]}" install 'setuptools<70' 2>/dev/null
        MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="$(nproc)" "${PIP[@]}" wheel --no-build-isolation --no-deps \
            -w "$WHEELS" mmcv==2.1.0
    fi
    "${PIP[@]}" install --no-deps "$WHEELS"/mmcv-2.1.0-*.whl
fi
"${PIP[@]}" install -e ".[test]"
"$VENV/bin/python" -c "import torch, mmcv.ops, mmdet, mmengine, musu.models" \
    || { echo "[bootstrap] error: the environment does not import; rerun with BOOTSTRAP_FORCE=1" >&2; exit 1; }
echo "$want" > "$STAMP"
say "ready: $VENV"
