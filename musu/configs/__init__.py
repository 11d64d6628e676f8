"""mmengine config files of the suite, shipped inside the package.

``config_path('musu_r50_1x_coco')`` gives the file's path so that tools and
tests never depend on the working directory.
"""
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def _inside(base: Path, rel: str) -> Path | None:
    """``base/rel`` when that file exists and lies inside ``base`` (no absolute path, no ``..`` out)."""
    if Path(rel).is_absolute():
        return None
    base = base.resolve()
    path = (base / rel).resolve()
    return path if path.is_file() and path.is_relative_to(base) else None


def config_path(name: str, dirs: tuple[str | Path, ...] = ()) -> Path:
    """Path of a config by name (with or without ``.py``; ``smoke/...`` allowed;
    ``mmdet::atss/atss_r101_fpn_1x_coco.py`` names one of mmdet's own).

    A config is Python that mmengine executes: a name resolves only inside the
    suite's configs, mmdet's, or a folder its user named (``dirs``, from
    ``reproduce --configs DIR``), never to any file a profile points at.
    """
    if name.startswith("mmdet::"):
        import importlib.util
        spec = importlib.util.find_spec("mmdet")
        rel = name[len("mmdet::"):]
        path = _inside(Path(spec.submodule_search_locations[0]) / ".mim" / "configs", rel) if spec else None
        if path is None:
            raise FileNotFoundError(f"mmdet has no config {rel!r} (is mmdet 3.3 installed?)")
        return path
    rel = name if name.endswith(".py") else f"{name}.py"
    for base in (CONFIG_DIR, *map(Path, dirs)):
        path = _inside(base, rel)
        if path is not None:
            return path
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise FileNotFoundError(f"config {name!r} is outside the configs the suite may execute (musu/configs, "
                                "mmdet::NAME, or a folder named with --configs DIR)")
    where = f" or in {', '.join(map(str, dirs))}" if dirs else ""
    raise FileNotFoundError(f"unknown config {name!r}{where}; known configs: {', '.join(available_configs())}")


def available_configs() -> list[str]:
    return sorted(str(p.relative_to(CONFIG_DIR))[:-3] for p in CONFIG_DIR.rglob("*.py")
                  if not p.name.startswith("_") and "_base_" not in p.parts)
