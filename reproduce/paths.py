"""Where the suite's own files are, and its cache: one place, so a module's
depth in the package never decides what a path points at."""
from __future__ import annotations

import os
from pathlib import Path

# The checkout (or installed tree) holding musu/, sweeps/, cluster/ and reports/ beside reproduce/.
REPO = Path(__file__).resolve().parent.parent


def cache_dir(kind: str = "plans") -> Path:
    """The suite's cache of ``kind`` (plans, data digests), under XDG_CACHE_HOME."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "musu-reproduce" / kind
