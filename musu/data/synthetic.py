"""A deterministic synthetic COCO-format detection set.

No COCO can be downloaded here, and tests need objects whose boxes are known
exactly: coloured rectangles, ellipses and triangles on textured backgrounds,
with occlusion order kept so every box is the visible shape's extent. The same
seed always gives the same bytes, so runs on it are comparable across machines.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("rectangle", "ellipse", "triangle")


@dataclass(frozen=True)
class SyntheticSpec:
    num_train: int = 64
    num_val: int = 16
    image_size: int = 256
    min_objects: int = 1
    max_objects: int = 5
    min_size: int = 24
    max_size: int = 120
    seed: int = 0
    num_test: int = 0  # an unlabeled split (image info only, as COCO's test-dev): test/, annotations/test.json

    def __post_init__(self) -> None:
        """Settings the generator cannot draw from are refused here, naming the field, not
        deep inside numpy ("low >= high") after a profile was read."""
        for name, value in self.__dict__.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
        lows = dict(num_train=1, num_val=1, num_test=0, min_objects=1, min_size=1, seed=0, image_size=16)
        for name, low in lows.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if self.max_objects < self.min_objects:
            raise ValueError(f"max_objects ({self.max_objects}) is below min_objects ({self.min_objects})")
        if self.max_size < self.min_size:
            raise ValueError(f"max_size ({self.max_size}) is below min_size ({self.min_size})")
        if self.min_size > self.image_size - 2:
            raise ValueError(f"min_size ({self.min_size}) leaves no room on {self.image_size} px images: at most "
                             f"image_size - 2 = {self.image_size - 2}")

    def settings(self) -> dict:
        """What makes this set: its fields, ``num_test`` only when there is a test split (so a set
        made before the field existed keeps its identity)."""
        return {k: v for k, v in sorted(self.__dict__.items()) if k != "num_test" or v}


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Smooth noise plus stripes: enough texture that objects are not trivially separable."""
    low = rng.integers(40, 200, size=(8, 8, 3)).astype(np.uint8)
    img = Image.fromarray(low).resize((size, size), Image.BICUBIC)
    arr = np.asarray(img).astype(np.int16)
    yy, xx = np.mgrid[0:size, 0:size]
    period = rng.integers(6, 20)
    angle = rng.uniform(0, np.pi)
    stripes = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) * 18).astype(np.int16)
    arr = arr + stripes[..., None] + rng.integers(-12, 12, size=arr.shape, dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _draw_object(draw: ImageDraw.ImageDraw, cls: int, box, color) -> None:
    x1, y1, x2, y2 = box
    if cls == 0:
        draw.rectangle(box, fill=color)
    elif cls == 1:
        draw.ellipse(box, fill=color)
    else:
        draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=color)


def _make_image(rng: np.random.Generator, spec: SyntheticSpec):
    size = spec.image_size
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    anns = []
    for _ in range(int(rng.integers(spec.min_objects, spec.max_objects + 1))):
        w, h = rng.integers(spec.min_size, min(spec.max_size, size - 2) + 1, size=2)
        x1, y1 = rng.integers(0, size - w), rng.integers(0, size - h)
        cls = int(rng.integers(0, len(CLASSES)))
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        box = (int(x1), int(y1), int(x1 + w - 1), int(y1 + h - 1))
        _draw_object(draw, cls, box, color)
        anns.append((cls, box))
    # Later shapes occlude earlier ones: drop an object hidden for the most part
    # by what was drawn after it, so no annotation points at an invisible shape.
    visible = []
    for k, (cls, box) in enumerate(anns):
        mask = np.zeros((size, size), bool)
        mask[box[1]:box[3] + 1, box[0]:box[2] + 1] = True
        covered = np.zeros_like(mask)
        for _, later in anns[k + 1:]:
            covered[later[1]:later[3] + 1, later[0]:later[2] + 1] = True
        if (mask & ~covered).sum() >= 0.5 * mask.sum():
            visible.append((cls, box))
    img = img.filter(ImageFilter.GaussianBlur(radius=0.6))
    return img, visible


def write_split(root: Path, split: str, count: int, spec: SyntheticSpec, seed: int, labeled: bool = True) -> Path:
    """``root/SPLIT/*.png`` and ``root/annotations/SPLIT.json``; unlabeled: the images and
    categories alone, as an image-info file (COCO's ``image_info_test-dev2017.json``)."""
    rng = np.random.default_rng(seed)
    img_dir = root / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        img, objs = _make_image(rng, spec)
        name = f"{split}_{i:05d}.png"
        img.save(img_dir / name)
        images.append(dict(id=i + 1, file_name=name, width=spec.image_size, height=spec.image_size))
        for cls, (x1, y1, x2, y2) in objs:
            w, h = x2 - x1 + 1, y2 - y1 + 1
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1, category_id=cls + 1,
                                    bbox=[x1, y1, w, h], area=float(w * h), iscrowd=0))
    coco = dict(images=images, categories=[dict(id=k + 1, name=n) for k, n in enumerate(CLASSES)])
    if labeled:
        coco["annotations"] = annotations
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    path = ann_dir / f"{split}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(coco))
    tmp.replace(path)  # a crash mid-write never leaves a half JSON behind
    return path


def generate(root: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write ``root/{train,val}/*.png`` and ``root/annotations/{train,val}.json`` (and the
    unlabeled ``test`` split when ``num_test``).

    Idempotent: a root already holding this spec's data (``spec.json``
    matches) is left as it is.
    """
    root = Path(root)
    marker = root / "spec.json"
    wanted = json.dumps(spec.settings(), sort_keys=True)
    if marker.exists() and marker.read_text() == wanted and (root / "annotations" / "val.json").exists():
        return root
    write_split(root, "train", spec.num_train, spec, spec.seed)
    write_split(root, "val", spec.num_val, spec, spec.seed + 1_000_003)
    if spec.num_test:
        write_split(root, "test", spec.num_test, spec, spec.seed + 2_000_003, labeled=False)
    tmp = marker.with_name(marker.name + ".tmp")  # written whole or not at all: a crash leaves no half marker
    tmp.write_text(wanted)
    tmp.replace(marker)
    return root


def main(argv=None) -> None:
    import argparse
    ap = argparse.ArgumentParser(description="Write the synthetic COCO-format set.")
    ap.add_argument("root")
    for field, default in SyntheticSpec().__dict__.items():
        ap.add_argument(f"--{field.replace('_', '-')}", type=int, default=default)
    args = vars(ap.parse_args(argv))
    root = args.pop("root")
    try:
        spec = SyntheticSpec(**args)
    except ValueError as exc:
        ap.error(str(exc))
    out = generate(root, spec)
    print(f"synthetic COCO set in {out}")


if __name__ == "__main__":
    main()
