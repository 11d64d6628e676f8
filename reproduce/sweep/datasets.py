"""Checking (or, for the synthetic set, making) a profile's data before any job is submitted."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from reproduce.errors import UserError
from reproduce.sweep.profiles import Profile

if TYPE_CHECKING:
    from reproduce.node.fingerprint import Today


def root_of(profile: Profile, base: Path) -> Path:
    """Where the profile's dataset lies (a relative root is under the work dir ``base``)."""
    root = Path(profile.dataset["root"])
    return root if root.is_absolute() else base / root


def fingerprint_today(profile: Profile, base: Path, runs: list) -> "Today":
    """What the profile's runs would record if trained now: the code's, the annotations' and the
    libraries' fingerprints (``reproduce.node.fingerprint``)."""
    from reproduce.node.fingerprint import today
    return today(root_of(profile, base), runs[0].options if runs else None)


def uses_test_split(runs: list) -> bool:
    """Whether any of ``runs`` writes detections on the profile's unlabeled split (``plan.dataset_options``)."""
    return any(r.options.get("test_evaluator.format_only") for r in runs)


def prepare(profile: Profile, base: Path, test_split: bool = False) -> Path:
    """The dataset root, ready to train on; a clear error otherwise. The unlabeled split
    (``test_info``) is checked only when ``test_split``: a run of Table 1 needs no test-dev."""
    ds = profile.dataset
    root = root_of(profile, base)
    if ds["type"] == "synthetic":
        from musu.data import SyntheticSpec, generate
        try:
            spec = SyntheticSpec(**(ds.get("generate") or {}))
        except (TypeError, ValueError) as exc:
            raise UserError(str(exc), file=profile.file, field="dataset.generate") from None
        marker = root / "spec.json"
        try:
            made = json.loads(marker.read_text()) if marker.is_file() else None
        except (ValueError, OSError) as exc:
            raise UserError(f"{marker} is damaged ({type(exc).__name__}): the set in {root} may be incomplete",
                            file=profile.file, field="dataset.root",
                            hint=f"move {root} away; the next run makes the set again") from None
        if made is not None and made != spec.settings():
            # Jobs queued earlier may read this folder: never rewrite it under them.
            raise UserError(f"{root} holds a synthetic set made with other generate: settings "
                            f"({marker.read_text().strip()})", file=profile.file, field="dataset.root",
                            hint="give these settings another root, or move that folder away")
        generate(root, spec)
    if not root.is_dir():
        raise UserError(f"dataset root {root} does not exist", file=profile.file, field="dataset.root",
                        hint="download COCO there (train2017/, val2017/, annotations/) or edit the profile's root")
    for split in ("train", "val", "test"):
        if split == "test" and not (test_split and ds.get("test_info")):
            continue
        _check_annotations(root / ds["test_info" if split == "test" else f"{split}_ann"], profile, split)
        img = ds.get(f"{split}_img")
        if img and not (root / img).is_dir():
            raise UserError(f"image folder {root / img} does not exist", file=profile.file, field=f"dataset.{split}_img",
                            hint="unpack the images there or fix the profile")
    return root


def _check_annotations(path: Path, profile: Profile, split: str) -> None:
    """A COCO annotation file; for the test split an image-info file (images, no annotations)."""
    field = "dataset.test_info" if split == "test" else f"dataset.{split}_ann"
    needed = ("images", "categories") if split == "test" else ("images", "annotations", "categories")
    if not path.is_file():
        if split == "test":
            raise UserError(f"the test split's image-info file {path} does not exist", file=profile.file, field=field,
                            hint=f"for COCO test-dev unpack image_info_test2017.zip into {path.parent} and "
                                 "test2017.zip beside train2017/ (README: Table 6 on test-dev), or remove "
                                 "test_info/test_img from the profile to score these rows on the validation split")
        raise UserError(f"annotation file {path} does not exist", file=profile.file, field=field,
                        hint="download the COCO annotations or fix the profile's path")
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not JSON ({exc.__class__.__name__})", file=profile.file, field=field,
                        hint="point the profile at a COCO instances_*.json file") from None
    if not isinstance(data, dict) or not all(k in data for k in needed):
        raise UserError(f"{path} is not a COCO {'image-info' if split == 'test' else 'annotation'} file (needs "
                        f"{', '.join(needed)})", file=profile.file, field=field,
                        hint="point the profile at a COCO image_info_*.json file" if split == "test" else
                        "point the profile at a COCO instances_*.json file")
    if not data["images"] or (split != "test" and not data["annotations"]):
        raise UserError(f"{path} holds no {'images' if not data['images'] else 'annotations'}", file=profile.file,
                        field=field, hint="an empty dataset cannot be trained or evaluated")
