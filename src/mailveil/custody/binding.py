"""The key set bound to its database.

Every key the data depends on is recorded in ``key_fingerprints`` the first time ``mailveil
init`` (or ``serve``, ``relay``) meets it. From then on a process whose keys directory lacks
one of them, or holds a different key under its name, is refused before it mints anything:
a new key set against an existing database would leave every address undecryptable and
every checkpoint unverifiable ("keys forked"), so the error says which directory to point at.

A database from before this table existed is adopted only if the keys present open its data
(every data key unwraps, a customer's address decrypts to its blind index, the newest
checkpoint verifies).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import false, select, update
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.custody.models import ACTIVE, RETIRED, KeyFingerprint
from mailveil.db.base import utcnow
from mailveil.keyfiles import KeyFileError, read_secret

_FP_LABEL = b"mailveil/key-fingerprint/v1"

INDEX = "address-index"
KEK = "address-kek"
LEDGER = "ledger-signing"
DKIM = "dkim"
VERP = "verp"


def _secret_fp(data: bytes) -> str:
    # An HMAC under the key itself: comparable, yet says nothing about the key.
    return hmac.new(data, _FP_LABEL, hashlib.sha256).hexdigest()[:32]


def _ed25519_fp(data: bytes) -> str:
    if len(data) != 32:
        raise KeyFileError("not a 32-byte Ed25519 seed")
    public = Ed25519PrivateKey.from_private_bytes(data).public_key().public_bytes_raw()
    return hashlib.sha256(public).hexdigest()[:32]


def _rsa_fp(data: bytes) -> str:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise KeyFileError("not a PEM private key") from exc
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:32]


# purpose -> (file name patterns, fingerprint of the file's bytes)
_KINDS: dict[str, tuple[tuple[str, ...], Callable[[bytes], str]]] = {
    INDEX: (("address-index*.key",), _secret_fp),
    KEK: (("address-kek-*.key",), _secret_fp),
    LEDGER: (("ledger-ed25519*.key",), _ed25519_fp),
    VERP: (("relay-verp*.key",), _secret_fp),
}
_DKIM_KINDS: tuple[tuple[str, Callable[[bytes], str]], ...] = (
    ("dkim-*.ed25519.key", _ed25519_fp),
    ("dkim-*.rsa.pem", _rsa_fp),
)


def fingerprint_file(path: Path, fp: Callable[[bytes], str]) -> str:
    try:
        return fp(read_secret(path))
    except KeyFileError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise KeyFileError(f"{path}: {exc}") from None


def present_keys(keys_dir: Path) -> dict[tuple[str, str], str]:
    """{(purpose, file name): fingerprint} of the key files in ``keys_dir``."""
    found: dict[tuple[str, str], str] = {}
    if not keys_dir.is_dir():
        return found
    for purpose, (patterns, fp) in _KINDS.items():
        for pattern in patterns:
            for path in sorted(keys_dir.glob(pattern)):
                found[(purpose, path.name)] = fingerprint_file(path, fp)
    for pattern, fp in _DKIM_KINDS:
        for path in sorted(keys_dir.glob(pattern)):
            found[(DKIM, path.name)] = fingerprint_file(path, fp)
    return found


def present_key_set(settings: Settings) -> dict[tuple[str, str], str]:
    """``present_keys`` of the keys directory and, with a PKCS#11 key store, the token's
    KEKs and ledger key (key check values and public-key hashes: nothing leaves it)."""
    from mailveil.custody.keystore import key_store

    found = present_keys(settings.keys_dir)
    store = key_store(settings)
    if store is not None:
        found.update(store.fingerprints())
    return found


class KeyMismatch(KeyFileError):
    """The keys directory does not hold the keys this database was made with."""


@dataclass
class BindReport:
    registered: list[str] = field(default_factory=list)  # file names newly recorded
    retired: list[str] = field(default_factory=list)  # recorded keys nothing needs any more
    adopted: bool = False  # a database from before key binding, checked against its data


def mismatch_message(keys_dir: Path, problems: Iterable[str]) -> str:
    listed = list(problems)
    shown = "; ".join(listed[:4]) + (f"; and {len(listed) - 4} more" if len(listed) > 4 else "")
    return (
        f"the keys in {keys_dir} are not the keys this database was initialised with "
        f"({shown}). Point keys_path (MAILVEIL_KEYS_PATH) or --data-dir at the keys directory "
        "this database was first initialised with, or bring its keys back with `mailveil "
        "restore --keys-only KEYFILE`. Nothing was created or changed."
    )


def recorded(session: Session) -> list[KeyFingerprint]:
    return list(session.scalars(select(KeyFingerprint).order_by(KeyFingerprint.purpose)))


def holds_data(session: Session) -> bool:
    """Whether anything in the database needs particular keys (addresses, checkpoints)."""
    from mailveil.ledger.models import LedgerCheckpoint
    from mailveil.vault import VaultKey

    return (
        session.scalar(select(VaultKey.id).limit(1)) is not None
        or session.scalar(select(LedgerCheckpoint.tree_size).limit(1)) is not None
    )


def check_recorded(
    session: Session, settings: Settings, present: dict[tuple[str, str], str]
) -> tuple[list[str], list[KeyFingerprint]]:
    """Problems with the recorded keys, and recorded KEKs that may be marked retired."""
    from mailveil.vault import VaultKey

    used_keks = {
        name
        for k in session.scalars(select(VaultKey.kek_id))
        for name in (f"address-kek-{k}.key", f"pkcs11:{settings.pkcs11_key_prefix}-kek-{k}")
    }
    problems: list[str] = []
    gone: list[KeyFingerprint] = []
    for row in recorded(session):
        if row.state == RETIRED:
            continue  # archived after a rotation: kept for old backups, needed by nothing
        have = present.get((row.purpose, row.key_id))
        if have is not None and have != row.fingerprint:
            problems.append(
                f"{row.key_id} is another key (fingerprint {have[:12]} here, "
                f"{row.fingerprint[:12]} recorded)"
            )
        elif have is None and row.state == ACTIVE:
            if row.purpose == KEK and row.key_id not in used_keks:
                gone.append(row)  # retired by `keys retire`: no data key is wrapped under it
            else:
                problems.append(f"{row.key_id} ({row.purpose}, {row.fingerprint[:12]}) is missing")
    return problems, gone


def check_against_data(session: Session, settings: Settings) -> list[str]:
    """Problems opening this database's data with the keys in ``keys_dir``."""
    from mailveil.contacts.models import Customer
    from mailveil.custody.ledger_rotation import ledger_keys
    from mailveil.ledger.models import LedgerCheckpoint
    from mailveil.ledger.signing import CheckpointError, CheckpointSigner, verify_checkpoint_any
    from mailveil.vault import Vault, VaultError, VaultKey

    problems: list[str] = []
    try:
        vault = Vault.open(settings)
    except KeyFileError as exc:
        return [str(exc)]
    for row in session.scalars(select(VaultKey)):
        try:
            vault._unwrap(row)
        except VaultError as exc:
            problems.append(exc.detail)
    if not problems:
        one = session.execute(
            select(
                Customer.external_id,
                Customer.address_ct,
                Customer.address_dek,
                Customer.address_bidx,
            ).limit(1)
        ).first()
        if one is not None:
            ext, ct, dek, bidx = one
            try:
                plain = vault.decrypt(session, ct, dek, bidx, owner=ext)
            except VaultError as exc:
                problems.append(exc.detail)
            else:
                if vault.blind_index(plain) != bytes(bidx):
                    problems.append("the blind-index key does not index the stored addresses")
    latest = session.scalar(
        select(LedgerCheckpoint).order_by(LedgerCheckpoint.tree_size.desc()).limit(1)
    )
    if latest is not None:
        try:
            signer = CheckpointSigner.load(settings)
            verify_checkpoint_any(latest.note, ledger_keys(settings, signer.public_key))
        except (KeyFileError, CheckpointError) as exc:
            problems.append(f"the newest checkpoint does not verify under the ledger key ({exc})")
    return problems


def bind_keys(
    session: Session, settings: Settings, *, mint: Callable[[], object] | None = None
) -> BindReport:
    """Check the keys against what the database recorded, then (only if they match) let
    ``mint`` create keys for purposes nothing depends on yet, and record every key present.

    Raises KeyMismatch before ``mint`` runs when a key is missing or different. Flushes;
    the caller commits.
    """
    report = BindReport()
    keys_dir = settings.keys_dir
    # Write first: on SQLite a transaction that read before writing fails at once when
    # another writer (a running relay) committed meanwhile; one that writes first waits.
    session.execute(update(KeyFingerprint).where(false()).values(state=KeyFingerprint.state))
    present = present_key_set(settings)
    if not recorded(session) and holds_data(session):
        problems = check_against_data(session, settings)
        if problems:
            raise KeyMismatch(mismatch_message(keys_dir, problems))
        report.adopted = True
    else:
        problems, gone = check_recorded(session, settings, present)
        if problems:
            raise KeyMismatch(mismatch_message(keys_dir, problems))
        for row in gone:
            row.state, row.retired_at = RETIRED, utcnow()
            report.retired.append(row.key_id)
    if mint is not None:
        mint()
        present = present_key_set(settings)
    known = {(r.purpose, r.key_id) for r in recorded(session)}
    for (purpose, key_id), fp in sorted(present.items()):
        if (purpose, key_id) not in known:
            session.add(KeyFingerprint(purpose=purpose, key_id=key_id, fingerprint=fp))
            report.registered.append(key_id)
    session.flush()
    return report


def retire_recorded(session: Session, purpose: str, key_id: str) -> None:
    """Mark a recorded key retired (it may be deleted; nothing needs it)."""
    row = session.get(KeyFingerprint, (purpose, key_id))
    if row is not None and row.state != RETIRED:
        row.state, row.retired_at = RETIRED, utcnow()
        session.flush()


__all__ = [
    "DKIM",
    "INDEX",
    "KEK",
    "LEDGER",
    "VERP",
    "BindReport",
    "KeyMismatch",
    "bind_keys",
    "check_against_data",
    "check_recorded",
    "holds_data",
    "mismatch_message",
    "present_key_set",
    "present_keys",
    "recorded",
    "retire_recorded",
]
