"""Fingerprints of the code, and of the annotations, that shape a run's result.

A config hash says *what* was trained; it cannot see a fix in ``musu/`` (the
assigner, the loss, a config file) or another mmdet. Every run records this
fingerprint when it trains; a finished run whose fingerprint is not today's
is *stale*: ``status`` and the reports say so, and ``reproduce run
--rerun-stale`` trains it again, the way Snakemake's rerun triggers do for
changed code.

The same holds for the data: a config hash names the annotation files
(``train_ann`` ...), not what is in them. A run records the fingerprint of
the annotation files it read (``data_fingerprint``); a finished run whose
fingerprint differs from the files there today is stale too. A run trained
before this was recorded carries none and is not called stale (nothing says
its data differed). Images are not hashed (COCO's are 19 GB): an image
replaced under the same name goes unseen.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
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


def annotation_files(options: dict) -> list[str]:
    """The annotation files a run's options name (``*.dataset.ann_file``), relative to its data root."""
    return sorted({str(v) for k, v in options.items() if k.endswith("dataset.ann_file")})


def data_fingerprint(root: str | os.PathLike, options: dict) -> str | None:
    """12 hex digits over the content of the annotation files ``options`` name under ``root``;
    None when one is missing. Each file's digest is cached by its path, size and mtime
    (COCO's train annotations are 450 MB: hashed once, not on every ``status``)."""
    h = hashlib.sha256()
    names = annotation_files(options)
    if not names:
        return None
    for name in names:
        digest = _file_digest(Path(root) / name)
        if digest is None:
            return None
        h.update(f"{name}={digest}".encode())
    return h.hexdigest()[:12]


def _file_digest(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    from .plan import cache_dir
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    cached = cache_dir("data") / f"{key}.json"
    try:
        return json.loads(cached.read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"path": str(path), "sha256": digest}))
        tmp.replace(cached)
    except OSError:
        pass  # a read-only cache costs time, not correctness
    return digest
