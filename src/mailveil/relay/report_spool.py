"""The abuse mailbox's spool: reports taken but not yet finished, as files under
``data_dir/report-spool``.

Two kinds of report wait here, so that no reporter is ever turned away:

* **queued**: the database could not take the report in time (busy, restarting). The
  reporter got its receipt; the report is stored when the spool is drained.
* **pending**: the report is stored (it has an id) but its sender could not be checked
  because DNS did not answer. Its bytes and SMTP envelope are kept so the check can be
  repeated (``abuse_intake.process_spool``); the file goes once the report is decided.

One file per report: a line of JSON (the envelope: MAIL FROM, client IP, HELO, when it
arrived, why it waits, the report id if it has one), then the message byte for byte. The
folder is 0700 and files 0600 (reports carry the reporter's real address); a file is written
under a temporary name, synced and renamed, so a crash never leaves half a report. A report
that fails for another reason than the database is set aside (``<name>.failed``) for the
operator, so it cannot hold up the queue.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FOLDER = "report-spool"
_NAME = re.compile(r"^\d{13,20}-[0-9a-f]{16}\.report$")
MAX_ENVELOPE_BYTES = 8192


@dataclass(frozen=True)
class Spooled:
    name: str
    envelope: dict[str, Any]
    raw: bytes

    @property
    def report_id(self) -> int | None:
        value = self.envelope.get("report_id")
        return int(value) if isinstance(value, int) else None

    @property
    def reference(self) -> str:
        """What the reporter was told before the report had an id."""
        return "Q-" + self.name.split("-", 1)[1][:12]


def folder(data_dir: Path) -> Path:
    return data_dir / FOLDER


def _ensure(data_dir: Path) -> Path:
    path = folder(data_dir)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def put(data_dir: Path, raw: bytes, envelope: dict[str, Any]) -> Spooled:
    """Keep one report (atomic); its name orders the spool by arrival."""
    path = _ensure(data_dir)
    head = json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode("utf-8")
    if len(head) > MAX_ENVELOPE_BYTES or b"\n" in head:
        raise ValueError("spool envelope too large")
    name = f"{time.time_ns() // 1000:016d}-{hashlib.sha256(raw).hexdigest()[:16]}.report"
    temp = path / f".{name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(head + b"\n" + raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path / name)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return Spooled(name, envelope, raw)


def read(data_dir: Path, name: str) -> Spooled | None:
    """One spooled report, or None when it is gone (another process finished it) or not
    one of ours."""
    if not _NAME.match(name):
        return None
    try:
        data = (folder(data_dir) / name).read_bytes()
    except FileNotFoundError:
        return None
    head, sep, raw = data.partition(b"\n")
    try:
        envelope = json.loads(head) if sep else None
    except ValueError:
        envelope = None
    if not isinstance(envelope, dict):
        return None
    return Spooled(name, envelope, raw)


def names(data_dir: Path, *, limit: int | None = None) -> list[str]:
    """Spooled reports, oldest first."""
    path = folder(data_dir)
    if not path.is_dir():
        return []
    found = sorted(p.name for p in path.iterdir() if _NAME.match(p.name))
    return found[:limit] if limit is not None else found


def spooled(data_dir: Path, *, limit: int | None = None) -> Iterator[Spooled]:
    for name in names(data_dir, limit=limit):
        item = read(data_dir, name)
        if item is not None:
            yield item


def remove(data_dir: Path, name: str) -> bool:
    if not _NAME.match(name):
        return False
    try:
        (folder(data_dir) / name).unlink()
    except FileNotFoundError:
        return False
    return True


def set_aside(data_dir: Path, name: str) -> str:
    """Move a report out of the queue (``<name>.failed``, still 0600) and return the new
    name: a defect in one report must not hold up the ones behind it."""
    kept = f"{name}.failed"
    if _NAME.match(name):
        with contextlib.suppress(FileNotFoundError):
            os.replace(folder(data_dir) / name, folder(data_dir) / kept)
    return kept


def rewrite(data_dir: Path, item: Spooled, envelope: dict[str, Any]) -> Spooled:
    """Replace a spooled report's envelope (a queued report got its id): a new file first,
    then the old one goes, so the report is never absent from the spool."""
    fresh = put(data_dir, item.raw, envelope)
    remove(data_dir, item.name)
    return fresh


__all__ = [
    "FOLDER",
    "Spooled",
    "folder",
    "names",
    "put",
    "read",
    "remove",
    "rewrite",
    "set_aside",
    "spooled",
]
