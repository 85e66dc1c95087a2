"""Every CSV the product writes for people goes through here: formula cells neutralised.

A spreadsheet evaluates a cell that starts with ``=``, ``+``, ``-`` or ``@`` (and some also
after a leading tab or carriage return) as a formula, so an external id such as
``=HYPERLINK("http://…")`` that a marketplace stored would run on an employee's machine when
the export is opened. The OWASP rule: prefix such a cell with a single quote, which the
spreadsheet shows as text. Files written only for a machine to read back (DuckDB's staging
files) keep their values exact and do not use this.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, Protocol

FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


class _Writable(Protocol):
    def write(self, s: str, /) -> object: ...


def safe_cell(value: Any) -> Any:
    """The value, or a text cell a spreadsheet will not evaluate."""
    if isinstance(value, str) and value.startswith(FORMULA_LEADS):
        return "'" + value
    return value


class SafeCsvWriter:
    """``csv.writer`` whose every cell passes through :func:`safe_cell`."""

    def __init__(self, handle: _Writable, *, lineterminator: str = "\r\n") -> None:
        self._writer = csv.writer(handle, lineterminator=lineterminator)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([safe_cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


__all__ = ["FORMULA_LEADS", "SafeCsvWriter", "safe_cell"]
