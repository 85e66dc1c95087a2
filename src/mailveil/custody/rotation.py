"""Rotating the keys the vault's KEK rotation does not cover, with the service running.

Blind-index key (online re-index, lookups working throughout)
    1. ``begin_index_rotation`` writes ``address-index-next.key``. Every process re-reads the
       index keys every ``key_refresh_seconds``; from then on it writes new rows under the
       next key and looks addresses up under both (``Vault.blind_indexes``).
    2. After that interval (every process is in the dual state) ``reindex_addresses``
       re-seals each row under the next key in committed batches (the index is part of the
       ciphertext's associated data, so the row is re-encrypted too). A row changed
       meanwhile is left alone: whoever changed it already wrote it under the next key.
    3. ``finish_index_rotation`` archives the old key as ``address-index-retired-<time>.key``
       and renames the next key over ``address-index.key`` (one atomic rename), and records
       both in ``key_fingerprints``. A process still in the dual state finds every row; one
       that re-read the files finds them under the one key left.

VERP key (old bounce addresses accepted for ``verp_grace_days``)
    ``rotate_verp_key`` archives ``relay-verp.key`` as ``relay-verp-retired-<unix time>.key``
    and writes a new one; the relay signs with the new key once it re-reads the keys and
    accepts every archived key younger than the grace period (``relay.messages.VerpKeys``).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, bindparam, false, func, select, update
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.custody.binding import INDEX, VERP, fingerprint_file, present_keys
from mailveil.custody.models import ACTIVE, RETIRED, KeyFingerprint
from mailveil.db.base import utcnow
from mailveil.keyfiles import KeyFileError, read_secret, write_secret
from mailveil.vault import INDEX_KEY_FILE, INDEX_NEXT_FILE, Vault, customer_address_batches

ProgressFn = Callable[[int, int], None]


class RotationError(RuntimeError):
    """A rotation cannot start or finish (another one is half done, a key is missing)."""


@dataclass
class IndexRotationReport:
    resumed: bool
    reindexed: int
    retired_file: str


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def begin_write(session: Session) -> None:
    """Start the transaction with a write. SQLite cannot turn a read transaction into a write
    one while another writer (the relay) committed meanwhile: it fails at once instead of
    waiting. A transaction that writes first waits for the lock (busy_timeout)."""
    session.commit()
    session.execute(update(KeyFingerprint).where(false()).values(state=KeyFingerprint.state))


def _record(session: Session, purpose: str, key_id: str, fp: str, state: str = ACTIVE) -> None:
    row = session.get(KeyFingerprint, (purpose, key_id))
    if row is None:
        session.add(KeyFingerprint(purpose=purpose, key_id=key_id, fingerprint=fp, state=state))
    else:
        row.fingerprint, row.state = fp, state
        row.retired_at = utcnow() if state == RETIRED else None
    session.flush()


def begin_index_rotation(session: Session, settings: Settings) -> bool:
    """Write the next blind-index key (recorded at once). False when one already exists:
    a rotation that stopped half-way is resumed with the same next key."""
    path = settings.keys_dir / INDEX_NEXT_FILE
    if path.exists():
        return False
    write_secret(path, secrets.token_bytes(32))
    begin_write(session)
    _record(
        session, INDEX, INDEX_NEXT_FILE, present_keys(settings.keys_dir)[(INDEX, INDEX_NEXT_FILE)]
    )
    session.commit()
    return True


def reindex_addresses(
    session: Session, vault: Vault, *, batch_size: int = 1000, progress: ProgressFn | None = None
) -> int:
    """Re-seal every customer row under the next index key; commits per batch."""
    from mailveil.contacts.models import Customer

    vault.refresh_index_keys(force=True)
    if not vault.index_rotating:
        raise RotationError(f"no {INDEX_NEXT_FILE}: start the rotation first")
    table = cast(Table, Customer.__table__)
    total = session.scalar(select(func.count()).select_from(Customer)) or 0
    done = changed = 0
    for batch in customer_address_batches(session, batch_size=batch_size):
        params = []
        for cid, ext, ct, dek_id, bidx in batch:
            sealed = vault.reindex(session, ct, dek_id, bidx, owner=ext)
            if sealed is not None:
                params.append(
                    {
                        "b_id": cid,
                        "b_old": bytes(bidx),
                        "b_ct": sealed.ciphertext,
                        "b_dek": sealed.dek_id,
                        "b_bidx": sealed.blind_index,
                    }
                )
        session.commit()  # the read ends here; the write below starts its own transaction
        if params:
            # Only if the row still holds what was read: a concurrent change wins.
            session.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"), table.c.address_bidx == bindparam("b_old"))
                .values(
                    address_ct=bindparam("b_ct"),
                    address_dek=bindparam("b_dek"),
                    address_bidx=bindparam("b_bidx"),
                ),
                params,
            )
        session.commit()
        done += len(batch)
        changed += len(params)
        if progress:
            progress(done, total)
    return changed


def finish_index_rotation(session: Session, settings: Settings) -> str:
    """Make the next key the only one; the old one is archived (needed by older backups)."""
    keys_dir = settings.keys_dir
    next_path, current = keys_dir / INDEX_NEXT_FILE, keys_dir / INDEX_KEY_FILE
    if not next_path.exists():
        raise RotationError(f"no {INDEX_NEXT_FILE}: nothing to finish")
    retired = f"address-index-retired-{_stamp()}.key"
    write_secret(keys_dir / retired, read_secret(current))
    old_fp = fingerprint_file(keys_dir / retired, _fp_of(INDEX))
    new_fp = fingerprint_file(next_path, _fp_of(INDEX))
    os.replace(next_path, current)
    begin_write(session)
    _record(session, INDEX, retired, old_fp, RETIRED)
    _record(session, INDEX, INDEX_KEY_FILE, new_fp)
    _record(session, INDEX, INDEX_NEXT_FILE, new_fp, RETIRED)
    session.commit()
    return retired


def _fp_of(purpose: str) -> Callable[[bytes], str]:
    from mailveil.custody.binding import _KINDS

    return _KINDS[purpose][1]


def rotate_index_key(
    session: Session,
    settings: Settings,
    vault: Vault,
    *,
    wait_seconds: float | None = None,
    batch_size: int = 1000,
    progress: ProgressFn | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> IndexRotationReport:
    """The whole blind-index rotation: begin, wait for every process to index under both
    keys, re-index, finish. Safe to run again after an interruption (it resumes)."""
    began = begin_index_rotation(session, settings)
    sleep(settings.key_refresh_seconds if wait_seconds is None else wait_seconds)
    reindexed = reindex_addresses(session, vault, batch_size=batch_size, progress=progress)
    retired = finish_index_rotation(session, settings)
    vault.refresh_index_keys(force=True)
    return IndexRotationReport(resumed=not began, reindexed=reindexed, retired_file=retired)


# ------------------------------------------------------------------------------------- VERP


def rotate_verp_key(session: Session, settings: Settings) -> str:
    """A new VERP key; the old one archived and accepted for ``verp_grace_days``."""
    from mailveil.relay.messages import VERP_KEY_FILE, VERP_RETIRED_PREFIX

    keys_dir = settings.keys_dir
    current = keys_dir / VERP_KEY_FILE
    if not current.exists():
        raise KeyFileError(f"{current} is missing")
    retired = f"{VERP_RETIRED_PREFIX}{int(time.time())}-{secrets.token_hex(2)}.key"
    write_secret(keys_dir / retired, read_secret(current))
    fp = _fp_of(VERP)
    old_fp = fingerprint_file(keys_dir / retired, fp)
    write_secret(current, secrets.token_bytes(32), overwrite=True)
    begin_write(session)
    _record(session, VERP, retired, old_fp, RETIRED)
    _record(session, VERP, VERP_KEY_FILE, fingerprint_file(current, fp))
    session.commit()
    return retired


__all__ = [
    "IndexRotationReport",
    "RotationError",
    "begin_index_rotation",
    "begin_write",
    "finish_index_rotation",
    "reindex_addresses",
    "rotate_index_key",
    "rotate_verp_key",
]
