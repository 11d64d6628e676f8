"""One exception type for every bad input the user can fix.

The CLI prints ``str(error)`` on one line and exits 2; nothing already done is
touched. Messages name the file, the row and the field, then the fix.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input: a one-line message that names the problem and the fix."""

    def __init__(self, message: str, *, file: str | None = None, row: str | None = None,
                 field: str | None = None, hint: str | None = None) -> None:
        self.file, self.row, self.field, self.hint = file, row, field, hint
        where = []
        if file:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if field:
            where.append(f"field '{field}'")
        text = (": ".join([", ".join(where), message]) if where else message).replace("\n", " ")
        if hint:
            text += f" ({hint})"
        super().__init__(text)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first line (its type's name when it has no message), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
