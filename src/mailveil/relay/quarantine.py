"""The quarantine: messages held rather than delivered, as files under ``data_dir/quarantine``.

A held message is kept byte for byte as it arrived, in a file named by its SHA-256 (so the
name proves the content, and the same message held twice is one file). The folder is 0700
and each file 0600: they hold strangers' mail to customers' aliases and mail to canaries,
which may name real addresses. A file is written to a temporary name, synced, then renamed,
so a crash never leaves half a message under a final name.

What a held message was, who sent it and why it is held lives in the ledger (the
``stranger_at_alias`` or ``canary_hit`` entry carries the ``sha256`` and ``size``); there is
no table of its own. ``mailveil quarantine`` lists, shows, releases and deletes.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mailveil.errors import Conflict, InvalidInput, NotFound

FOLDER = "quarantine"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PREFIX = re.compile(r"^[0-9a-f]{%d,64}$")
MIN_PREFIX = 8  # hex digits: 4 billion names, enough to tell a quarantine's messages apart


@dataclass(frozen=True)
class Held:
    sha256: str
    size: int
    held_at: datetime


def folder(data_dir: Path) -> Path:
    return data_dir / FOLDER


def _ensure(data_dir: Path) -> Path:
    path = folder(data_dir)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # mkdir's mode is subject to the umask; an existing folder too
    return path


def check_sha(sha256: str) -> str:
    """``sha256`` as a file name: 64 lower-case hex digits, nothing else (no paths)."""
    value = sha256.strip().lower()
    if not _SHA256.match(value):
        raise InvalidInput("a quarantined message is named by its SHA-256 (64 hex digits)")
    return value


def store(data_dir: Path, raw: bytes) -> Held:
    """Hold ``raw``; return its name and size. Atomic; the same bytes twice are one file."""
    sha = hashlib.sha256(raw).hexdigest()
    path = _ensure(data_dir)
    final = path / sha
    if not final.exists():
        temp = path / f".{sha}.{secrets.token_hex(4)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(raw)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
    return Held(sha, len(raw), _mtime(final))


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def held(data_dir: Path) -> list[Held]:
    """Every held message, oldest first."""
    path = folder(data_dir)
    if not path.is_dir():
        return []
    out = [
        Held(p.name, p.stat().st_size, _mtime(p))
        for p in path.iterdir()
        if _SHA256.match(p.name) and p.is_file()
    ]
    return sorted(out, key=lambda h: (h.held_at, h.sha256))


def resolve(data_dir: Path, text: str) -> str:
    """The full SHA-256 of the one held message whose name starts with ``text`` (at least
    ``MIN_PREFIX`` hex digits; a whole name is taken as it is)."""
    value = text.strip().lower()
    if _SHA256.match(value):
        return value
    if not re.match(_PREFIX.pattern % MIN_PREFIX, value):
        raise InvalidInput(
            f"name a quarantined message by its SHA-256 or its first {MIN_PREFIX}+ hex digits"
        )
    found = [h.sha256 for h in held(data_dir) if h.sha256.startswith(value)]
    if not found:
        raise NotFound(f"no quarantined message's SHA-256 starts with {value}")
    if len(found) > 1:
        raise Conflict(f"{len(found)} quarantined messages start with {value}: give more digits")
    return found[0]


def read(data_dir: Path, sha256: str) -> bytes:
    """The held message's bytes, checked against its name."""
    sha = check_sha(sha256)
    path = folder(data_dir) / sha
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFound("no quarantined message with that SHA-256") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise InvalidInput("the quarantined file does not match its SHA-256 (altered on disk)")
    return data


def remove(data_dir: Path, sha256: str) -> None:
    sha = check_sha(sha256)
    try:
        (folder(data_dir) / sha).unlink()
    except FileNotFoundError:
        raise NotFound("no quarantined message with that SHA-256") from None


__all__ = [
    "FOLDER",
    "MIN_PREFIX",
    "Held",
    "check_sha",
    "folder",
    "held",
    "read",
    "remove",
    "resolve",
    "store",
]
