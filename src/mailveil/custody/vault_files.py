"""The vault's key files in the keys directory: the blind-index key (and the next one while it
rotates) and the local key-encryption keys, ``address-kek-<id>.key`` (0600), ids sorting by
creation time. ``init_keys`` makes the first ones; ``mailveil.vault`` reads them.
"""

from __future__ import annotations

import contextlib
import secrets
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailveil.config import Settings
from mailveil.custody.keystore import key_store
from mailveil.keyfiles import KeyFileError, read_secret, write_secret

INDEX_KEY_FILE = "address-index.key"
INDEX_NEXT_FILE = "address-index-next.key"
KEK_PREFIX = "address-kek-"
KEK_SUFFIX = ".key"


def read_index_keys(keys_dir: Path) -> tuple[bytes, bytes | None]:
    # The next key is read first: a rotation that finishes in between (next renamed over
    # current) then still yields the new key, never the old one alone.
    next_path = keys_dir / INDEX_NEXT_FILE
    try:
        next_key = read_secret(next_path) if next_path.exists() else None
    except KeyFileError:
        if next_path.exists():
            raise
        next_key = None  # renamed over the current key just now: that is read next
    key = read_secret(keys_dir / INDEX_KEY_FILE)
    for path, k in ((keys_dir / INDEX_KEY_FILE, key), (next_path, next_key)):
        if k is not None and len(k) != 32:
            raise KeyFileError(f"{path} is not a 32-byte key")
    return key, (None if next_key == key else next_key)


def kek_id_now() -> str:
    # Sortable by creation time; the random tail keeps two rotations in one microsecond apart.
    now = datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond:06d}Z-{secrets.token_hex(3)}"


def kek_path(settings_dir: Path, kek_id: str) -> Path:
    return settings_dir / f"{KEK_PREFIX}{kek_id}{KEK_SUFFIX}"


def list_kek_ids(keys_dir: Path) -> list[str]:
    if not keys_dir.is_dir():
        return []
    return sorted(
        p.name[len(KEK_PREFIX) : -len(KEK_SUFFIX)]
        for p in keys_dir.iterdir()
        if p.name.startswith(KEK_PREFIX) and p.name.endswith(KEK_SUFFIX)
    )


def new_kek_file(keys_dir: Path) -> str:
    kek_id = kek_id_now()
    write_secret(kek_path(keys_dir, kek_id), AESGCM.generate_key(bit_length=256))
    return kek_id


def init_keys(settings: Settings) -> list[str]:
    """Create the blind-index key and a first KEK if absent (idempotent). Returns what was made."""
    made: list[str] = []
    keys_dir = settings.keys_dir
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    index_path = keys_dir / INDEX_KEY_FILE
    if not index_path.exists():
        # Another process may create it first; then theirs is used.
        with contextlib.suppress(KeyFileError, FileExistsError):
            write_secret(index_path, secrets.token_bytes(32))
            made.append(INDEX_KEY_FILE)
    store = key_store(settings)
    if store is not None:
        if not store.kek_ids():
            kek_id = kek_id_now()
            store.new_kek(kek_id)
            made.append(f"pkcs11 KEK {kek_id}")
    elif not list_kek_ids(keys_dir):
        kek_id = new_kek_file(keys_dir)
        made.append(f"{KEK_PREFIX}{kek_id}{KEK_SUFFIX}")
    return made


__all__ = [
    "INDEX_KEY_FILE",
    "INDEX_NEXT_FILE",
    "KEK_PREFIX",
    "KEK_SUFFIX",
    "init_keys",
    "kek_id_now",
    "kek_path",
    "list_kek_ids",
    "new_kek_file",
    "read_index_keys",
]
