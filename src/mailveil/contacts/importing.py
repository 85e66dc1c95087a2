"""Streaming parsers for customer files: CSV (with a header row) and NDJSON.

Both read line by line and yield ``(line_number, record)`` for good records or a
``ParseError(line, reason)`` for a bad line, then carry on: one bad line never stops the
file. Line numbers are 1-based physical lines (a CSV record spanning lines is numbered by
its first line). Input may be text or bytes; bytes are decoded per line, so a line that is
not UTF-8 is reported on its own. Reasons describe the problem, never the line's content.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal

MAX_LINE_CHARS = 64 * 1024
# A quoted CSV field may hold a few line breaks (an address block); one that runs on for
# more lines than this is an unclosed quote, and everything after it would be misread.
MAX_RECORD_LINES = 100
EMPTY_FILE = "the file holds no records: nothing was imported"
CSV_REQUIRED = ("external_id", "email")
Format = Literal["csv", "ndjson"]


@dataclass(frozen=True, slots=True)
class ParseError:
    line: int
    reason: str


Parsed = tuple[int, dict[str, Any]] | ParseError


def detect_format(filename: str) -> Format:
    name = filename.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".ndjson", ".jsonl")):
        return "ndjson"
    raise ValueError(f"cannot tell the format of {filename!r}: use .csv, .ndjson or .jsonl")


def _decoded(lines: Iterable[str | bytes], bad: set[int]) -> Iterator[str]:
    """Text lines; undecodable ones become empty-ish placeholders and are noted in ``bad``."""
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                bad.add(number)
                text = "\n" if raw.endswith(b"\n") else ""
        else:
            text = raw
        if number == 1 and text.startswith("\ufeff"):
            text = text[1:]
        if len(text) > MAX_LINE_CHARS:
            bad.add(-number)  # negative: too long
            text = "\n" if text.endswith("\n") else ""
        yield text


class _RecordTooLong(Exception):
    """A CSV record ran past MAX_RECORD_LINES physical lines."""


def _bounded(lines: Iterator[str], start: list[int]) -> Iterator[str]:
    """Lines for the CSV reader, stopping when the record begun at ``start[0]`` runs long."""
    for number, text in enumerate(lines, start=1):
        if number - start[0] >= MAX_RECORD_LINES:
            raise _RecordTooLong
        yield text


def _line_problem(number: int, bad: set[int]) -> str | None:
    if number in bad:
        return "the line is not valid UTF-8"
    if -number in bad:
        return f"the line is longer than {MAX_LINE_CHARS} characters"
    return None


def iter_ndjson(lines: Iterable[str | bytes]) -> Iterator[Parsed]:
    """One JSON object per line; blank lines are skipped."""
    bad: set[int] = set()
    seen = False
    for number, text in enumerate(_decoded(lines, bad), start=1):
        problem = _line_problem(number, bad)
        if problem:
            seen = True
            yield ParseError(number, problem)
            continue
        if not text.strip():
            continue
        seen = True
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield ParseError(number, f"malformed JSON at column {exc.colno}: {exc.msg}")
            continue
        except RecursionError:
            yield ParseError(number, "JSON nested too deeply")
            continue
        if not isinstance(value, dict):
            yield ParseError(number, f"expected a JSON object, got {type(value).__name__}")
            continue
        yield number, value
    if not seen:
        yield ParseError(1, EMPTY_FILE)


def iter_csv(
    lines: Iterable[str | bytes], *, required: tuple[str, ...] = CSV_REQUIRED
) -> Iterator[Parsed]:
    """A header row naming the fields, then one record per row; blank rows are skipped.

    A missing or unusable header is reported once, on line 1, and nothing else is read; so
    is an empty file, and a record running over MAX_RECORD_LINES lines (an unclosed quote)
    ends the file with one error rather than one per misread line.
    """
    bad: set[int] = set()
    start = [1]
    reader = csv.reader(_bounded(_decoded(lines, bad), start), strict=True)
    header: list[str] | None = None
    last_line = 0
    records = 0
    while True:
        first = last_line + 1
        start[0] = first
        try:
            row = next(reader)
        except StopIteration:
            if header is None:
                yield ParseError(1, EMPTY_FILE)
            elif records == 0:
                yield ParseError(
                    1, "the file has a header row but no records: nothing was imported"
                )
            return
        except _RecordTooLong:
            yield ParseError(
                first,
                f"a record runs over more than {MAX_RECORD_LINES} lines (an unclosed quote?); "
                "the rest of the file was not read",
            )
            return
        except csv.Error as exc:
            last_line = reader.line_num
            records += 1
            yield ParseError(first, f"malformed CSV: {exc}")
            continue
        last_line = reader.line_num
        problem = next(
            (p for n in range(first, last_line + 1) if (p := _line_problem(n, bad))), None
        )
        if header is None:
            if problem:
                yield ParseError(first, f"header: {problem}")
                return
            names = [h.strip().lower() for h in row]
            missing = [r for r in required if r not in names]
            if not row or missing:
                yield ParseError(
                    first,
                    "missing header row: the first line must name the "
                    f"columns, including {', '.join(required)}",
                )
                return
            if len(set(names)) != len(names):
                yield ParseError(first, "the header names a column twice")
                return
            header = names
            continue
        if problem:
            records += 1
            yield ParseError(first, problem)
            continue
        if not row or all(not cell.strip() for cell in row):
            continue
        records += 1
        if len(row) != len(header):
            yield ParseError(first, f"expected {len(header)} columns, got {len(row)}")
            continue
        yield (
            first,
            {
                name: cell.strip()
                for name, cell in zip(header, row, strict=True)
                if cell.strip() != ""
            },
        )


def iter_records(
    stream: IO[str] | IO[bytes] | Iterable[str | bytes], fmt: Format
) -> Iterator[Parsed]:
    """Records from an open file (text or binary) or any iterable of lines."""
    if fmt == "csv":
        return iter_csv(stream)
    if fmt == "ndjson":
        return iter_ndjson(stream)
    raise ValueError(f"unknown format {fmt!r}")


__all__ = [
    "CSV_REQUIRED",
    "EMPTY_FILE",
    "MAX_LINE_CHARS",
    "MAX_RECORD_LINES",
    "Format",
    "ParseError",
    "Parsed",
    "detect_format",
    "iter_csv",
    "iter_ndjson",
    "iter_records",
]
