"""A fingerprint of the code that shapes a run's result.

A config hash says *what* was trained; it cannot see a fix in ``musu/`` (the
assigner, the loss, a config file) or another mmdet. Every run records this
fingerprint when it trains; a finished run whose fingerprint is not today's
is *stale*: ``status`` and the reports say so, and ``reproduce run
--rerun-stale`` trains it again, the way Snakemake's rerun triggers do for
changed code.
"""
from __future__ import annotations

import functools
import hashlib
from importlib import metadata
from pathlib import Path

MUSU_DIR = Path(__file__).resolve().parent.parent / "musu"
# The libraries whose versions change what a run computes.
LIBRARIES = ("torch", "mmcv", "mmdet", "mmengine", "numpy", "pycocotools")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """12 hex digits over every file of ``musu/`` (the math, the head, the configs) and
    the versions of ``LIBRARIES``."""
    h = hashlib.sha256()
    for path in sorted(p for p in MUSU_DIR.rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".json")
                       and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(MUSU_DIR)).encode())
        h.update(path.read_bytes())
    for name in LIBRARIES:
        h.update(f"{name}=={_version(name)}".encode())
    return h.hexdigest()[:12]
