"""The checks every YAML input shares: sweep specs, profiles, cluster profiles, the metric vocabulary.

Each is data read with ``yaml.safe_load`` (never code), and each bad value
becomes one ``UserError`` that names the file, the row and the field, then
the fix; these helpers are the only place that wording is made.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from reproduce.errors import UserError


# What a YAML input may expand to, counting every alias where it is used: each scalar (a
# string by its length) and container once per use. The suite's largest spec is a few
# thousand; a 574-byte spec of nested aliases expanded to 4.2 GB when printed.
MAX_EXPANDED = 1_000_000
MAX_BYTES = 4 << 20  # a spec or profile of more than 4 MiB is no spec


class MalformedYaml(UserError):
    """Text that is not YAML at all (a caller may take it as plain text: ``--set name=text``)."""


def load_yaml(path: str | Path) -> Any:
    """A YAML file's data; an unreadable file, malformed YAML, or a document that expands
    past ``MAX_EXPANDED`` through its aliases is one line with its position or size."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"{path.stat().st_size:,} bytes, more than the {MAX_BYTES:,} a spec or profile may have",
                            file=str(path))
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read the file: {exc.strerror or exc}", file=str(path)) from None
    return load_yaml_text(text, str(path))


def load_yaml_text(text: str, where: str) -> Any:
    """``yaml.safe_load`` with ``load_yaml``'s one-line errors (``where``: the file or the flag)."""
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise UserError("nested deeper than can be read", file=where) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MalformedYaml(f"malformed YAML{at}: {problem}", file=where) from None
    try:
        size = expanded_size(data)
    except RecursionError:
        raise UserError("nested deeper than can be read", file=where) from None
    if size is None:
        raise UserError("a YAML alias refers to a node that contains it (an endless document)", file=where,
                        hint="replace the alias (*name) inside its own anchor (&name) by a copy")
    if size > MAX_EXPANDED:
        raise UserError(f"its aliases expand it to {size:,} values and characters, more than the "
                        f"{MAX_EXPANDED:,} a spec, profile or option may have", file=where,
                        hint="write the values out, or split the sweep")
    return data


def expanded_size(data: Any, cap: int = MAX_EXPANDED) -> int | None:
    """How big ``data`` is with every alias expanded (a string counts its characters); None for
    a document that contains itself. Shared nodes are sized once and counted at every use,
    so a document of nested aliases is sized in time linear in its *written* size; the count
    stops growing past ``cap``."""
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()

    def size(node: Any) -> int | None:
        if isinstance(node, str):
            return len(node) + 1
        if not isinstance(node, (list, dict)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            return None
        open_ids.add(key)
        total = 1
        for child in (x for kv in node.items() for x in kv) if isinstance(node, dict) else node:
            n = size(child)
            if n is None:
                return None
            total = min(cap + 1, total + n)
        open_ids.discard(key)
        sizes[key] = total
        return total

    return size(data)


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
