"""Secret files in the data directory: created atomically with mode 0600, checked on read.

Only vault.py (address keys), ledger/signing.py (the checkpoint signing key) and
console/sessions.py (the console's cookie and link secret) call these.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# Not "run `mailveil init`": against an existing database that would have minted a new,
# unrelated key set (it now refuses to); the keys that exist must be found instead.
MISSING_KEY_ADVICE = (
    "point keys_path (MAILVEIL_KEYS_PATH) or --data-dir at the keys directory this database "
    "was initialised with, or restore it (`mailveil restore --keys-only KEYFILE`); only for a "
    "new database does `mailveil init` create keys"
)


class KeyFileError(RuntimeError):
    """A key file is missing, unreadable or readable by others."""


def write_secret(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, flags, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if not overwrite and path.exists():
        tmp.unlink()
        raise KeyFileError(f"{path} already exists")
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def read_secret(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise KeyFileError(f"{path} is missing: {MISSING_KEY_ADVICE}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} is readable by others (mode {oct(mode & 0o777)}); chmod 600 it")
    return path.read_bytes()
