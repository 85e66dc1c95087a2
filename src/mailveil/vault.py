"""The vault: the only module that holds address key material.

Addresses
    ``normalize_address`` validates with email-validator (never a DNS lookup) and returns two
    forms. The *stored* form is email-validator's normalisation (Unicode NFC, domain
    lowercased and in its Unicode form, local part exactly as given): that is what the relay
    delivers to. The *canonical* form, used only for the blind index, also lowercases the
    local part and uses the IDNA (ASCII) domain, so ``Alice@Bücher.de`` and
    ``alice@xn--bcher-kva.de`` are the same customer. Provider-specific rules (dots, ``+tags``)
    are not folded: they are not universal.

Encryption (envelope, AES-256-GCM)
    Key-encryption keys (KEKs) are local files ``address-kek-<id>.key`` in ``keys_dir`` (0600,
    made and listed by ``custody.vault_files``; the ``vault_keys`` table is in ``custody.models``);
    the newest id (ids sort by creation time) wraps new data keys. Data-encryption keys (DEKs)
    are random, stored wrapped in ``vault_keys`` with the id of their KEK; the wrap's AAD names
    the DEK and KEK ids. Each address ciphertext is ``0x01 || nonce || ct+tag`` under one DEK
    (its id stored beside it); its AAD is ``mailveil/address/v1 || blind index || owner`` so a
    ciphertext cannot be moved to another row.

Blind index
    HMAC-SHA256 of the canonical form under ``address-index.key``, a key separate from the
    KEKs. It is what uniqueness and lookup use; the vault never decrypts to search. While the
    key rotates (``custody.rotation``) ``address-index-next.key`` exists too: new rows are
    indexed under it, lookups ask for both (``blind_indexes``) until every row is re-indexed
    and the next key replaces the current one. Each process re-reads the two files every
    ``key_refresh_seconds``.

Rotation
    ``rotate_keys`` writes a new KEK, re-wraps every DEK under it (a few rows: no downtime, no
    address re-encryption needed), and makes a fresh DEK active for new writes; with
    ``reencrypt`` it then moves address rows to that DEK in committed batches. ``retire_keys``
    deletes inactive DEKs no row uses and KEK files no DEK uses.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import ColumnElement, Row, Table, bindparam, false, func, select, update
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.custody.keystore import Aead, KeyStore, key_store
from mailveil.custody.models import VaultKey
from mailveil.custody.vault_files import (
    INDEX_KEY_FILE,
    INDEX_NEXT_FILE,
    KEK_PREFIX,
    KEK_SUFFIX,
    init_keys,
    kek_id_now,
    kek_path,
    list_kek_ids,
    new_kek_file,
    read_index_keys,
)
from mailveil.db.base import utcnow
from mailveil.errors import InvalidAddress, MailveilError
from mailveil.keyfiles import MISSING_KEY_ADVICE, KeyFileError, read_secret

MAX_ADDRESS_CHARS = 320
_CT_VERSION = b"\x01"
_ADDRESS_AAD = b"mailveil/address/v1\x00"
_DEK_AAD = b"mailveil/dek/v1\x00"
# A process re-reads which DEK is active this often, so a rotation done by another process
# is picked up without a restart (its old DEK stays valid meanwhile).
ACTIVE_DEK_TTL_SECONDS = 30.0


class VaultError(MailveilError):
    """A ciphertext fails to decrypt or a key is missing: data or keys were tampered with."""

    code = "vault-error"
    status = 500
    title = "Vault failure"


class NormalizedAddress(NamedTuple):
    stored: str  # what the relay delivers to
    canonical: str  # what the blind index is computed over


class SealedAddress(NamedTuple):
    ciphertext: bytes
    dek_id: str
    blind_index: bytes
    # Every index the address may be stored under (this one first): two while the
    # blind-index key rotates. Uniqueness checks ask for all of them.
    lookup: tuple[bytes, ...] = ()


def _safe_reason(message: str) -> str:
    # email-validator sometimes quotes characters or IDNA labels after ':' or in '(...)';
    # keep only the fixed sentence before them so no part of the address is echoed.
    head = message.split(":", 1)[0].split(" (", 1)[0].strip().rstrip(".")
    return (head or "not a valid email address") + "."


def normalize_address(address: object) -> NormalizedAddress:
    """Validate a real address; raise InvalidAddress with a reason that never echoes it."""
    if not isinstance(address, str):
        raise InvalidAddress("the address must be text")
    if not address.strip():
        raise InvalidAddress("the address is empty")
    if len(address) > MAX_ADDRESS_CHARS:
        raise InvalidAddress(f"the address is longer than {MAX_ADDRESS_CHARS} characters")
    try:
        valid = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(_safe_reason(str(exc))) from None
    domain = (valid.ascii_domain or valid.domain).lower()
    return NormalizedAddress(valid.normalized, f"{valid.local_part.lower()}@{domain}")


@dataclass
class RotationReport:
    new_kek_id: str
    rewrapped_deks: int
    new_dek_id: str
    reencrypted_rows: int = 0
    unreferenced_keks: list[str] = field(default_factory=list)


@dataclass
class RetireReport:
    deleted_deks: list[str] = field(default_factory=list)
    deleted_keks: list[str] = field(default_factory=list)
    kept_keks: list[str] = field(default_factory=list)


class Vault:
    """Keys for one process: built once (``Vault.open``) and passed in.

    Holds the KEKs and the blind-index key read from ``keys_dir`` and caches unwrapped DEKs.
    """

    def __init__(
        self,
        keys_dir: Path,
        index_key: bytes,
        keks: dict[str, bytes],
        *,
        next_index_key: bytes | None = None,
        refresh_seconds: float = 30.0,
        store: KeyStore | None = None,
    ) -> None:
        self._keys_dir = keys_dir
        self._index_key = index_key
        self._next_index_key = next_index_key
        self._refresh_seconds = refresh_seconds
        self._index_checked = time.monotonic()
        # KEKs as AES-GCM operations: in memory (files) or inside an HSM (custody.keystore).
        self._store = store
        self._keks: dict[str, Aead] = {k: AESGCM(v) for k, v in keks.items()}
        self._deks: dict[str, AESGCM] = {}
        self._active: tuple[str, AESGCM] | None = None
        self._active_checked = 0.0

    @classmethod
    def open(cls, settings: Settings) -> Vault:
        keys_dir = settings.keys_dir
        index_key, next_key = read_index_keys(keys_dir)
        vault = cls(
            keys_dir,
            index_key,
            {},
            next_index_key=next_key,
            refresh_seconds=settings.key_refresh_seconds,
            store=key_store(settings),
        )
        vault._load_keks()
        if not vault._keks:
            where = "the PKCS#11 token" if vault._store is not None else str(keys_dir)
            raise KeyFileError(f"no key-encryption key in {where}: {MISSING_KEY_ADVICE}")
        return vault

    # -- keys ---------------------------------------------------------------------------

    def _load_keks(self) -> None:
        if self._store is not None:
            for kek_id in self._store.kek_ids():
                if kek_id not in self._keks:
                    self._keks[kek_id] = self._store.kek(kek_id)
            return
        for kek_id in list_kek_ids(self._keys_dir):
            if kek_id not in self._keks:
                key = read_secret(kek_path(self._keys_dir, kek_id))
                if len(key) != 32:
                    raise KeyFileError(f"key-encryption key {kek_id} is not a 32-byte key")
                self._keks[kek_id] = AESGCM(key)

    @property
    def current_kek_id(self) -> str:
        return max(self._keks)

    def kek_ids(self) -> list[str]:
        return sorted(self._keks)

    def new_kek(self) -> str:
        """A new KEK (a file, or a key generated inside the HSM); the newest wraps from now."""
        if self._store is None:
            kek_id = new_kek_file(self._keys_dir)
        else:
            kek_id = kek_id_now()
            self._store.new_kek(kek_id)
        self._load_keks()
        return kek_id

    def delete_kek(self, kek_id: str) -> None:
        if self._store is None:
            kek_path(self._keys_dir, kek_id).unlink(missing_ok=True)
        else:
            self._store.delete_kek(kek_id)
        self._keks.pop(kek_id, None)

    def _kek(self, kek_id: str) -> Aead:
        if kek_id not in self._keks:
            self._load_keks()  # rotated by another process since we started
        if kek_id not in self._keks:
            raise VaultError(f"key-encryption key {kek_id} is missing from the keys directory")
        return self._keks[kek_id]

    def _wrap(self, dek_id: str, kek_id: str, dek: bytes) -> bytes:
        nonce = os.urandom(12)
        aad = _DEK_AAD + f"{dek_id}\x00{kek_id}".encode()
        return nonce + self._kek(kek_id).encrypt(nonce, dek, aad)

    def _unwrap(self, row: VaultKey) -> bytes:
        aad = _DEK_AAD + f"{row.id}\x00{row.kek_id}".encode()
        blob = bytes(row.wrapped)
        try:
            return self._kek(row.kek_id).decrypt(blob[:12], blob[12:], aad)
        except InvalidTag:
            raise VaultError(f"data key {row.id} does not unwrap under {row.kek_id}") from None

    def _create_dek(self, session: Session) -> tuple[str, AESGCM]:
        dek_id = secrets.token_hex(8)
        dek = AESGCM.generate_key(bit_length=256)
        kek_id = self.current_kek_id
        session.add(
            VaultKey(
                id=dek_id,
                kek_id=kek_id,
                wrapped=self._wrap(dek_id, kek_id, dek),
                created_at=utcnow(),
                active=True,
            )
        )
        session.flush()
        aead = AESGCM(dek)
        self._deks[dek_id] = aead
        return dek_id, aead

    def _dek(self, session: Session, dek_id: str) -> AESGCM:
        aead = self._deks.get(dek_id)
        if aead is None:
            row = session.get(VaultKey, dek_id)
            if row is None:
                raise VaultError(f"data key {dek_id} is missing")
            aead = AESGCM(self._unwrap(row))
            self._deks[dek_id] = aead
        return aead

    def _active_dek(self, session: Session) -> tuple[str, AESGCM]:
        now = time.monotonic()
        cached = self._active
        if cached is not None:
            # The identity map answers without SQL while the row is in this session; a row
            # rolled back with its transaction is gone from it, so it is never referenced.
            row = session.get(VaultKey, cached[0])
            if row is not None and (now - self._active_checked < ACTIVE_DEK_TTL_SECONDS):
                return cached
            if row is not None:
                still_active = session.scalar(
                    select(VaultKey.active).where(VaultKey.id == cached[0])
                )
                if still_active:
                    self._active_checked = now
                    return cached
        dek_id = session.scalar(
            select(VaultKey.id)
            .where(VaultKey.active.is_(True))
            .order_by(VaultKey.created_at.desc(), VaultKey.id)
            .limit(1)
        )
        active = (
            self._create_dek(session) if dek_id is None else (dek_id, self._dek(session, dek_id))
        )
        self._active = active
        self._active_checked = now
        return active

    # -- addresses ----------------------------------------------------------------------

    def refresh_index_keys(self, *, force: bool = False) -> None:
        """Re-read the blind-index key files (every ``key_refresh_seconds``, or now)."""
        now = time.monotonic()
        if force or now - self._index_checked >= self._refresh_seconds:
            self._index_key, self._next_index_key = read_index_keys(self._keys_dir)
            self._index_checked = now

    @property
    def index_rotating(self) -> bool:
        self.refresh_index_keys()
        return self._next_index_key is not None

    def blind_index(self, address: str) -> bytes:
        """HMAC-SHA256 of the canonical form under the key new rows use; validates first."""
        return self._index(normalize_address(address).canonical)

    def blind_indexes(self, address: str) -> tuple[bytes, ...]:
        """Every index ``address`` may be stored under (two while the index key rotates)."""
        return self._indexes(normalize_address(address).canonical)

    def _index(self, canonical: str) -> bytes:
        return self._indexes(canonical)[0]

    def _indexes(self, canonical: str) -> tuple[bytes, ...]:
        self.refresh_index_keys()
        data = canonical.encode("utf-8")
        keys = [k for k in (self._next_index_key, self._index_key) if k is not None]
        return tuple(dict.fromkeys(hmac.new(k, data, hashlib.sha256).digest() for k in keys))

    @staticmethod
    def _aad(blind_index: bytes, owner: str) -> bytes:
        return _ADDRESS_AAD + blind_index + owner.encode("utf-8")

    def seal(self, session: Session, address: str, *, owner: str) -> SealedAddress:
        """Validate, normalise and encrypt ``address`` for the row named ``owner`` (a stable
        identifier of the row, e.g. the customer's external id)."""
        norm = normalize_address(address)
        lookup = self._indexes(norm.canonical)
        bidx = lookup[0]
        dek_id, aead = self._active_dek(session)
        nonce = os.urandom(12)
        ct = (
            _CT_VERSION
            + nonce
            + aead.encrypt(nonce, norm.stored.encode("utf-8"), self._aad(bidx, owner))
        )
        return SealedAddress(ct, dek_id, bidx, lookup)

    def decrypt(
        self, session: Session, ciphertext: bytes, dek_id: str, blind_index: bytes, *, owner: str
    ) -> str:
        """The stored address. Fails with VaultError if anything about the row was altered."""
        blob = bytes(ciphertext)
        if len(blob) < 1 + 12 + 16 or blob[:1] != _CT_VERSION:
            raise VaultError(f"address ciphertext of {owner!r} is malformed")
        try:
            plain = self._dek(session, dek_id).decrypt(
                blob[1:13], blob[13:], self._aad(bytes(blind_index), owner)
            )
        except InvalidTag:
            raise VaultError(
                f"address ciphertext of {owner!r} does not authenticate "
                "(tampered, or moved from another row)"
            ) from None
        return plain.decode("utf-8")

    def reseal(
        self, session: Session, ciphertext: bytes, dek_id: str, blind_index: bytes, *, owner: str
    ) -> tuple[bytes, str]:
        """Re-encrypt one row under the active DEK; returns (ciphertext, dek id)."""
        plain = self.decrypt(session, ciphertext, dek_id, blind_index, owner=owner)
        new_id, aead = self._active_dek(session)
        if new_id == dek_id:
            return bytes(ciphertext), dek_id
        nonce = os.urandom(12)
        ct = (
            _CT_VERSION
            + nonce
            + aead.encrypt(nonce, plain.encode("utf-8"), self._aad(bytes(blind_index), owner))
        )
        return ct, new_id

    def reindex(
        self, session: Session, ciphertext: bytes, dek_id: str, blind_index: bytes, *, owner: str
    ) -> SealedAddress | None:
        """The row re-sealed under the current index key (the index is in the ciphertext's
        associated data), or None when it already is."""
        plain = self.decrypt(session, ciphertext, dek_id, blind_index, owner=owner)
        sealed = self.seal(session, plain, owner=owner)
        return None if sealed.blind_index == bytes(blind_index) else sealed

    def forget_cached_keys(self) -> None:
        self._deks.clear()
        self._active = None


ProgressFn = Callable[[int, int], None]


def rotate_keys(
    session: Session,
    vault: Vault,
    *,
    reencrypt: bool = False,
    batch_size: int = 1000,
    progress: ProgressFn | None = None,
) -> RotationReport:
    """New KEK, every DEK re-wrapped under it, a fresh active DEK; commits.

    With ``reencrypt`` the address rows still under older DEKs are then re-encrypted under
    the new one in batches of ``batch_size``, each committed, calling ``progress(done, total)``.
    Reads keep working throughout: every DEK stays unwrappable at every commit.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    # Write first: on SQLite a transaction that read before writing fails at once when the
    # relay committed meanwhile; one that starts with a write waits for the lock instead.
    session.commit()
    session.execute(update(VaultKey).where(false()).values(active=VaultKey.active))
    new_kek = vault.new_kek()
    rows = list(session.scalars(select(VaultKey).order_by(VaultKey.created_at, VaultKey.id)))
    for row in rows:
        dek = vault._unwrap(row)
        row.wrapped = vault._wrap(row.id, new_kek, dek)
        row.kek_id = new_kek
        row.active = False
    session.flush()
    vault._active = None
    new_dek_id, _ = vault._create_dek(session)
    vault._active = (new_dek_id, vault._deks[new_dek_id])
    vault._active_checked = time.monotonic()
    session.commit()
    report = RotationReport(new_kek_id=new_kek, rewrapped_deks=len(rows), new_dek_id=new_dek_id)
    if reencrypt:
        report.reencrypted_rows = reencrypt_addresses(
            session, vault, batch_size=batch_size, progress=progress
        )
    report.unreferenced_keks = unreferenced_keks(session, vault)
    return report


def reencrypt_addresses(
    session: Session, vault: Vault, *, batch_size: int = 1000, progress: ProgressFn | None = None
) -> int:
    """Move every customer address not under the active DEK onto it; commits per batch."""
    from mailveil.contacts.models import Customer  # the vault serves contacts, not vice versa

    table = cast(Table, Customer.__table__)
    active_id, _ = vault._active_dek(session)
    pending = Customer.address_dek != active_id
    total = session.scalar(select(func.count()).select_from(Customer).where(pending)) or 0
    done = 0
    if progress:
        progress(0, total)
    for batch in customer_address_batches(session, pending, batch_size=batch_size):
        params = []
        for cid, ext, ct, dek_id, bidx in batch:
            new_ct, new_dek = vault.reseal(session, ct, dek_id, bidx, owner=ext)
            params.append({"b_id": cid, "b_old": dek_id, "b_ct": new_ct, "b_dek": new_dek})
        session.commit()  # the read ends; the write starts its own transaction (SQLite)
        session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.address_dek == bindparam("b_old"))
            .values(address_ct=bindparam("b_ct"), address_dek=bindparam("b_dek")),
            params,
        )
        session.commit()
        done += len(batch)
        if progress:
            progress(done, total)
    return done


def customer_address_batches(
    session: Session, *where: ColumnElement[bool], batch_size: int
) -> Iterator[Sequence[Row[int, str, bytes, str, bytes]]]:
    """Customers' sealed addresses (id, external id, ciphertext, data key, blind index) in id
    order, one batch at a time, for the jobs that re-seal every row. Each batch is its own
    query after the last id seen, so the caller may commit between batches."""
    from mailveil.contacts.models import Customer  # the vault serves contacts, not vice versa

    after = 0
    while True:
        batch = session.execute(
            select(
                Customer.id,
                Customer.external_id,
                Customer.address_ct,
                Customer.address_dek,
                Customer.address_bidx,
            )
            .where(*where, Customer.id > after)
            .order_by(Customer.id)
            .limit(batch_size)
        ).all()
        if not batch:
            return
        yield batch
        after = batch[-1][0]


def unreferenced_keks(session: Session, vault: Vault) -> list[str]:
    """KEK files no DEK is wrapped under (the newest KEK is never listed)."""
    vault._load_keks()
    used = set(session.scalars(select(VaultKey.kek_id).distinct()))
    newest = vault.current_kek_id
    return [k for k in vault.kek_ids() if k not in used and k != newest]


def retire_keys(session: Session, vault: Vault, *, dry_run: bool = False) -> RetireReport:
    """Delete inactive DEKs that no address uses, then KEK files that no DEK uses; commits.

    Keep backups in mind: a database restored from before a rotation needs the KEK files
    of that time, so archive retired KEKs if backups may be restored.
    """
    from mailveil.contacts.models import Customer

    report = RetireReport()
    used_deks = select(Customer.address_dek).distinct()
    stale = list(
        session.scalars(
            select(VaultKey.id).where(VaultKey.active.is_(False), VaultKey.id.not_in(used_deks))
        )
    )
    report.deleted_deks = sorted(stale)
    if not dry_run and stale:
        for dek_id in stale:
            row = session.get(VaultKey, dek_id)
            if row is not None:
                session.delete(row)
                vault._deks.pop(dek_id, None)
        session.commit()
    vault._load_keks()
    used = {
        kek
        for dek, kek in session.execute(select(VaultKey.id, VaultKey.kek_id))
        if dek not in stale
    }
    newest = vault.current_kek_id
    unused = [k for k in vault.kek_ids() if k not in used and k != newest]
    report.deleted_keks = unused
    report.kept_keks = [k for k in vault.kek_ids() if k not in unused]
    if not dry_run:
        for kek_id in unused:
            vault.delete_kek(kek_id)
    return report


def key_status(session: Session, vault: Vault) -> dict[str, object]:
    """What `mailveil keys` can show: KEKs, DEKs and how many rows each DEK protects."""
    from mailveil.contacts.models import Customer

    counts: dict[str, int] = {
        dek: int(n)
        for dek, n in session.execute(
            select(Customer.address_dek, func.count()).group_by(Customer.address_dek)
        )
    }
    deks = [
        {
            "id": r.id,
            "kek_id": r.kek_id,
            "active": r.active,
            "created_at": r.created_at.isoformat(),
            "rows": int(counts.get(r.id, 0)),
        }
        for r in session.scalars(select(VaultKey).order_by(VaultKey.created_at))
    ]
    return {"keks": vault.kek_ids(), "current_kek": vault.current_kek_id, "deks": deks}


__all__ = [
    "INDEX_KEY_FILE",
    "INDEX_NEXT_FILE",
    "KEK_PREFIX",
    "KEK_SUFFIX",
    "NormalizedAddress",
    "RetireReport",
    "RotationReport",
    "SealedAddress",
    "Vault",
    "VaultError",
    "VaultKey",
    "init_keys",
    "key_status",
    "normalize_address",
    "reencrypt_addresses",
    "retire_keys",
    "rotate_keys",
    "unreferenced_keks",
]
