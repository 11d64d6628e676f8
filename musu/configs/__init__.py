"""mmengine config files of the suite, shipped inside the package.

``config_path('musu_r50_1x_coco')`` gives the file's path so that tools and
tests never depend on the working directory.
"""
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def config_path(name: str) -> Path:
    """Path of a config by name (with or without ``.py``; ``smoke/...`` allowed;
    ``mmdet::atss/atss_r101_fpn_1x_coco.py`` names one of mmdet's own)."""
    if name.startswith("mmdet::"):
        import importlib.util
        spec = importlib.util.find_spec("mmdet")
        rel = name[len("mmdet::"):]
        path = Path(spec.submodule_search_locations[0]) / ".mim" / "configs" / rel if spec else Path(rel)
        if not path.is_file():
            raise FileNotFoundError(f"mmdet has no config {rel!r} (is mmdet 3.3 installed?)")
        return path
    path = CONFIG_DIR / (name if name.endswith(".py") else f"{name}.py")
    if not path.is_file():
        raise FileNotFoundError(f"unknown config {name!r}; known configs: {', '.join(available_configs())}")
    return path


def available_configs() -> list[str]:
    return sorted(str(p.relative_to(CONFIG_DIR))[:-3] for p in CONFIG_DIR.rglob("*.py")
                  if not p.name.startswith("_") and "_base_" not in p.parts)
