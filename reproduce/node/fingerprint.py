"""Fingerprints of the code, and of the annotations, that shape a run's result.

A config hash says *what* was trained; it cannot see a fix in ``musu/`` (the
assigner, the loss, a config file). Every run records this fingerprint when it
trains; a finished run whose fingerprint is not today's is *stale*: ``status``
and the reports say so, and ``reproduce run --rerun-stale`` trains it again,
the way Snakemake's rerun triggers do for changed code.

The versions of the libraries that shape a result (torch, mmcv, mmdet, ...) are
recorded beside it (``library_versions``), as the *job's* environment had them.
They are compared with those of the process that asks only when the user says
so (``--stale-libraries``): a login node's environment is often not the compute
nodes', and every run would otherwise read stale there forever. A run recorded
before the two were kept apart carries one fingerprint of both
(``legacy_code_fingerprint``).

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
from dataclasses import dataclass
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING
from reproduce.paths import REPO, cache_dir

if TYPE_CHECKING:
    from reproduce.tracking import Tracked

MUSU_DIR = REPO / "musu"
# The libraries whose versions change what a run computes.
LIBRARIES = ("torch", "mmcv", "mmdet", "mmengine", "numpy", "pycocotools")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _hash_code(h) -> None:
    for path in sorted(p for p in MUSU_DIR.rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".json")
                       and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(MUSU_DIR)).encode())
        h.update(path.read_bytes())


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """12 hex digits over every file of ``musu/`` (the math, the head, the configs)."""
    h = hashlib.sha256()
    _hash_code(h)
    return h.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def legacy_code_fingerprint() -> str:
    """The fingerprint runs recorded before the libraries were kept apart: ``musu/`` and
    this process's ``LIBRARIES`` versions in one hash."""
    h = hashlib.sha256()
    _hash_code(h)
    for name in LIBRARIES:
        h.update(f"{name}=={_version(name)}".encode())
    return h.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def library_versions() -> str:
    """``torch==2.13.0 mmcv==2.1.0 ...``: this process's versions of ``LIBRARIES``."""
    return " ".join(f"{name}=={_version(name)}" for name in LIBRARIES)


def library_changes(then: str, now: str) -> str:
    """``torch 2.12.0 -> 2.13.0, mmdet ...``: the libraries whose versions differ ('' when none)."""
    old = dict(item.split("==", 1) for item in then.split() if "==" in item)
    new = dict(item.split("==", 1) for item in now.split() if "==" in item)
    return ", ".join(f"{k} {old.get(k, '-')} -> {new.get(k, '-')}" for k in LIBRARIES
                     if old.get(k, "-") != new.get(k, "-"))


def stale_because(tracked: "Tracked", code: str | None, data: str | None, libraries: str | None = None) -> str:
    """Why a finished run is stale ('' when it is not): trained with other code than ``code``
    (today's), or on annotations other than ``data`` (today's; a run that recorded none is not
    called stale for it), or, when ``libraries`` is given (the user counts them:
    ``--stale-libraries``), with other library versions than those."""
    why = []
    if code and tracked.finished_libs is None:
        # recorded before the libraries were kept apart: one fingerprint of code and libraries
        if tracked.finished_code != legacy_code_fingerprint():
            why.append(f"trained with code {tracked.finished_code or 'of an older version'} (a fingerprint of the "
                       "code and its libraries together, from before they were recorded apart), now another")
    elif code and tracked.finished_code != code:
        why.append(f"trained with code {tracked.finished_code or 'of an older version'}, now {code}")
    if data and tracked.finished_data and tracked.finished_data != data:
        why.append(f"trained on annotations {tracked.finished_data}, now {data}")
    changed = library_changes(tracked.finished_libs, libraries) if libraries and tracked.finished_libs else ""
    if changed:
        why.append(f"trained with {changed}")
    return "; ".join(why)


@dataclass(frozen=True)
class Today:
    """What a run trained now would record (``tracking.TAG_CODE``, ``TAG_DATA``, ``TAG_LIBS``):
    a finished run that recorded otherwise is stale (``stale_because``)."""
    code: str
    data: str | None       # None: the annotations are not there, or the runs read none
    libraries: str


def today(root: str | os.PathLike, options: dict | None) -> Today:
    """The fingerprints of this code, of the annotations ``options`` name under ``root``, and
    of this process's libraries, read once for a whole sweep."""
    return Today(code_fingerprint(), data_fingerprint(root, options) if options is not None else None,
                 library_versions())


def annotation_files(options: dict) -> list[str]:
    """The labelled annotation files a run's options name (the training and validation loaders'
    ``dataset.ann_file``), relative to its data root. An unlabeled test split's image list
    (Table 6's test-dev) is left out: it shapes no number the run reports, and only Table 6's
    runs read it, so one fingerprint of today's annotations serves every run of a sweep."""
    return sorted({str(v) for k, v in options.items()
                   if k.endswith("dataset.ann_file") and k.startswith(("train_dataloader.", "val_dataloader."))})


def data_fingerprint(root: str | os.PathLike, options: dict) -> str | None:
    """12 hex digits over the content of the annotation files ``options`` name under ``root``;
    None when one is missing. Each file's digest is cached by its path, size and mtime
    (COCO's train annotations are 450 MB: hashed once, not on every ``status``)."""
    h = hashlib.sha256()
    names = annotation_files(options)
    if not names:
        return None
    cache = cache_dir("data")
    for name in names:
        digest = _file_digest(Path(root) / name, cache)
        if digest is None:
            return None
        h.update(f"{name}={digest}".encode())
    return h.hexdigest()[:12]


def _file_digest(path: Path, cache: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    cached = cache / f"{key}.json"
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
