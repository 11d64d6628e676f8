"""Pretrained weights for compute nodes without internet.

The configs name their ImageNet weights as ``open-mmlab://...``,
``torchvision://...`` or URLs, which mmengine downloads when a job starts.
Compute nodes often cannot reach the internet, so ``reproduce run`` fetches
every file the planned configs name into a cache on the submitting machine,
before anything is submitted, and the jobs read that cache (``TORCH_HOME``):
a job never downloads, and a missing or corrupt entry fails its preflight.
"""
from __future__ import annotations

import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable

from reproduce.errors import UserError


def pretrained(cfg) -> list[str]:
    """Every ``Pretrained`` checkpoint a config's model names."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Pretrained" and isinstance(node.get("checkpoint"), str):
                found.append(node["checkpoint"])
            for v in node.values():
                walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)
    walk(cfg.get("model", {}))
    return sorted(set(found))


def url_of(checkpoint: str) -> str | None:
    """The URL mmengine would download ``checkpoint`` from (None for a local file)."""
    if "://" not in checkpoint:
        return None
    import mmengine
    from mmengine.runner.checkpoint import get_deprecated_model_names, get_external_models, get_mmcls_models
    scheme, name = checkpoint.split("://", 1)
    if scheme in ("open-mmlab", "openmmlab"):
        name = get_deprecated_model_names().get(name, name)
        return get_external_models().get(name)
    if scheme in ("torchvision", "modelzoo"):
        # mmengine's own table of torchvision's URLs (without importing torchvision).
        return mmengine.load(str(Path(mmengine.__path__[0]) / "hub" / "torchvision_0.12.json")).get(name)
    if scheme == "mmcls":
        return get_mmcls_models().get(name)
    return checkpoint if scheme in ("http", "https") else None


def cached_path(checkpoint: str, torch_home: str | os.PathLike | None = None) -> Path | None:
    """Where mmengine reads ``checkpoint``: the file itself, or its entry in the
    torch hub cache (``TORCH_HOME``/hub/checkpoints/<file name>)."""
    if "://" not in checkpoint:
        return Path(checkpoint)
    url = url_of(checkpoint)
    if not url or not url.startswith(("http://", "https://")):
        return None
    if torch_home is not None:
        return Path(torch_home) / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    import torch
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def loads(path: Path) -> bool:
    import torch
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        return True
    except Exception:  # noqa: BLE001 - truncated, corrupt or not a checkpoint
        return False


def prefetch(checkpoints: Iterable[str], torch_home: Path, timeout: float = 60.0) -> list[Path]:
    """Every checkpoint in ``torch_home``'s hub cache, fetched where missing or
    unreadable; a one-line error naming the URL or the folder otherwise."""
    torch_home = Path(torch_home)
    folder = torch_home / "hub" / "checkpoints"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-")
        probe.close()
    except OSError as exc:
        raise UserError(f"the weights cache {folder} cannot be written ({exc.strerror or exc})",
                        hint="set weights_cache in the cluster profile to a shared folder you can write; "
                             "nothing was submitted") from None
    out = []
    for name in sorted(set(checkpoints)):
        path = cached_path(name, torch_home)
        if path is None:
            raise UserError(f"pretrained weights {name!r} name no URL mmengine knows",
                            hint="use open-mmlab://, torchvision://, an http(s) URL or a file path in the config")
        if "://" not in name:
            out.append(path)  # a file the user placed: the jobs' preflight checks it
            continue
        if path.is_file() and loads(path):
            out.append(path)
            continue
        url = url_of(name)
        print(f"reproduce: fetching {name} into {path}", file=sys.stderr)
        tmp = path.with_name(path.name + f".part-{os.getpid()}")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as fh:
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            tmp.unlink(missing_ok=True)
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise UserError(f"pretrained weights {url} could not be fetched: {reason}",
                            hint=f"fetch the file by hand into {path}, or fix the config; nothing was submitted") \
                from None
        if not loads(tmp):
            tmp.unlink(missing_ok=True)
            raise UserError(f"pretrained weights fetched from {url} do not load as a checkpoint",
                            hint=f"fetch the file by hand into {path}; nothing was submitted")
        os.replace(tmp, path)
        out.append(path)
    return out
