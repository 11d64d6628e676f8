"""The checks every YAML input shares: sweep specs, profiles, cluster profiles, the metric vocabulary.

Each is data read with ``yaml.safe_load`` (never code), and each bad value
becomes one ``UserError`` that names the file, the row and the field, then
the fix; these helpers are the only place that wording is made.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


def load_yaml(path: str | Path) -> Any:
    """A YAML file's data; an unreadable file or malformed YAML is one line with its position."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read the file: {exc.strerror or exc}", file=str(path)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"malformed YAML{where}: {problem}", file=str(path)) from None


def mapping(data: Any, file: str, what: str, field: str | None = None, row: str | None = None) -> dict:
    """``data`` must be a mapping (``what``: what it is, for the message)."""
    if not isinstance(data, dict):
        raise UserError(f"{what} is a mapping, got {type(data).__name__}", file=file, field=field, row=row)
    return data


def known_keys(data: dict, known: set[str] | frozenset[str], file: str, prefix: str = "",
               row: str | None = None) -> None:
    """Refuse a key outside ``known`` (a typo would otherwise be silently ignored)."""
    unknown = sorted(map(str, set(data) - set(known)))
    if unknown:
        raise UserError(f"unknown field(s) {unknown}", file=file, row=row, field=prefix + unknown[0],
                        hint=f"known: {', '.join(sorted(known))}")


def integer(data: dict, key: str, file: str, default: Any = None, minimum: int = 0, maximum: int | None = None,
            row: str | None = None, prefix: str = "") -> Any:
    """``data[key]`` as an integer in ``[minimum, maximum]`` (``default`` when absent; YAML's
    ``true`` is no integer)."""
    value = data.get(key, default)
    if value is None and default is None:
        return None
    ok = not isinstance(value, bool) and isinstance(value, int) and value >= minimum and \
        (maximum is None or value <= maximum)
    if not ok:
        bounds = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise UserError(f"must be an integer {bounds}, got {value!r}", file=file, row=row, field=prefix + key)
    return value


def text(data: dict, key: str, file: str, default: str | None = None, row: str | None = None,
         prefix: str = "", required: bool = False) -> str | None:
    """``data[key]`` as a string (``default`` when absent; ``required``: absent or empty is refused)."""
    value = data.get(key, default)
    if value is not None and not isinstance(value, str):
        raise UserError(f"expected text, got {value!r}", file=file, row=row, field=prefix + key)
    if required and not value:
        raise UserError("missing (text)", file=file, row=row, field=prefix + key)
    return value
