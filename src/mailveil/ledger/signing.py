"""Ed25519 checkpoint signing in the C2SP formats, so standard tlog tooling reads them.

A checkpoint (C2SP tlog-checkpoint) is a signed note (C2SP signed-note)::

    <origin>
    <tree size>
    <base64 root hash>
    time <RFC 3339 UTC time>
    <blank line>
    — <key name> <base64(key hash[4] || Ed25519 signature)>

The signature covers the note body (the lines before the blank line, newlines included).
The key hash is SHA-256(key name || "\\n" || 0x01 || public key)[:4]; the verifier key string
is ``<name>+<hex key hash>+<base64(0x01 || public key)>``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mailveil.config import Settings
from mailveil.keyfiles import MISSING_KEY_ADVICE, KeyFileError, read_secret, write_secret

KEY_FILE = "ledger-ed25519.key"
PUB_FILE = "ledger-ed25519.pub"
ALG_ED25519 = b"\x01"
_SIG_PREFIX = "\u2014 "


class CheckpointError(ValueError):
    """A checkpoint note is malformed or its signature does not verify."""


def key_path(settings: Settings) -> Path:
    return settings.keys_dir / KEY_FILE


def pub_path(settings: Settings) -> Path:
    return settings.keys_dir / PUB_FILE


def _check_key_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise ValueError(f"key name {name!r} must be non-empty, without spaces or '+'")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_hash(name: str, public_key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + _raw_public(public_key)).digest()[
        :4
    ]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The signed-note verifier key string for ``name`` and ``public_key``."""
    encoded = base64.b64encode(ALG_ED25519 + _raw_public(public_key)).decode()
    return f"{name}+{key_hash(name, public_key).hex()}+{encoded}"


def parse_verifier_key(text: str) -> tuple[str, Ed25519PublicKey]:
    try:
        name, khash, encoded = text.strip().split("+", 2)
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise CheckpointError("malformed verifier key") from exc
    if len(raw) != 33 or raw[:1] != ALG_ED25519:
        raise CheckpointError("verifier key is not an Ed25519 key")
    key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_hash(name, key).hex() != khash.lower():
        raise CheckpointError("verifier key hash does not match its name and key")
    return name, key


def format_time(time_us: int) -> str:
    moment = datetime.fromtimestamp(time_us // 1_000_000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{time_us % 1_000_000:06d}Z"


def parse_time(text: str) -> int:
    try:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise CheckpointError(f"bad checkpoint time {text!r}") from exc
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def checkpoint_body(origin: str, size: int, root: bytes, time_us: int | None) -> str:
    lines = [origin, str(size), base64.b64encode(root).decode()]
    if time_us is not None:
        lines.append(f"time {format_time(time_us)}")
    return "".join(line + "\n" for line in lines)


@dataclass(frozen=True)
class CheckpointSigner:
    """The ledger's Ed25519 signing key and its signed-note name."""

    key_name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def load(cls, settings: Settings) -> CheckpointSigner:
        if settings.key_store != "files":
            from mailveil.custody.keystore import key_store  # the key stays in the HSM

            store = key_store(settings)
            assert store is not None
            return cls(settings.origin, store.ledger_key())
        seed = read_secret(key_path(settings))
        if len(seed) != 32:
            raise KeyFileError(f"{key_path(settings)} is not a 32-byte Ed25519 seed")
        return cls(settings.origin, Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def generate(cls, key_name: str) -> CheckpointSigner:
        """An in-memory signer (tests, benchmarks); nothing is written."""
        _check_key_name(key_name)
        return cls(key_name, Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_key_bytes(self) -> bytes:
        return _raw_public(self.public_key)

    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key_bytes()).decode()

    @property
    def verifier_key(self) -> str:
        return verifier_key(self.key_name, self.public_key)

    def sign_note(self, body: str) -> str:
        """Sign a note body (ending in a newline) and return the whole signed note."""
        if not body.endswith("\n"):
            raise ValueError("note body must end with a newline")
        sig = self.private_key.sign(body.encode("utf-8"))
        blob = base64.b64encode(key_hash(self.key_name, self.public_key) + sig).decode()
        return f"{body}\n{_SIG_PREFIX}{self.key_name} {blob}\n"

    def sign_checkpoint(self, origin: str, size: int, root: bytes, time_us: int) -> str:
        return self.sign_note(checkpoint_body(origin, size, root, time_us))


def init_signing_key(settings: Settings) -> str:
    """Create the checkpoint key if it does not exist (idempotent); return its verifier key.

    The public half is also written to ``ledger-ed25519.pub`` (verifier key string) so
    auditors can verify without the private key.
    """
    _check_key_name(settings.origin)
    path = key_path(settings)
    if settings.key_store != "files":
        from mailveil.custody.keystore import key_store

        store = key_store(settings)
        assert store is not None
        store.ledger_key(create=True)
    elif not path.exists():
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        # Another process may create it first; then use theirs.
        with contextlib.suppress(KeyFileError, FileExistsError):
            write_secret(path, seed)
    vkey = CheckpointSigner.load(settings).verifier_key
    pub = pub_path(settings)
    if not pub.exists() or pub.read_text(encoding="utf-8").strip() != vkey:
        tmp = pub.with_name(f".{pub.name}.tmp")
        tmp.write_text(vkey + "\n", encoding="utf-8")
        tmp.replace(pub)
    return vkey


def load_public_key(settings: Settings) -> Ed25519PublicKey:
    """The checkpoint verification key from ``ledger-ed25519.pub`` (no private key needed)."""
    try:
        text = pub_path(settings).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise KeyFileError(f"{pub_path(settings)} is missing: {MISSING_KEY_ADVICE}") from exc
    return parse_verifier_key(text)[1]


@dataclass(frozen=True)
class ParsedCheckpoint:
    origin: str
    tree_size: int
    root: bytes
    time_us: int | None
    key_name: str


# The ledger's keys over its life: the current one and those it replaced (a rotation is a
# ledger entry, custody.ledger_rotation); a checkpoint verifies under any of them.
LedgerKeys = Ed25519PublicKey | tuple[Ed25519PublicKey, ...]


def verify_checkpoint_any(note: str, keys: LedgerKeys) -> ParsedCheckpoint:
    """``verify_checkpoint`` under the first of ``keys`` that signed the note."""
    tried = keys if isinstance(keys, tuple) else (keys,)
    failure: CheckpointError | None = None
    for key in tried:
        try:
            return verify_checkpoint(note, key)
        except CheckpointError as exc:
            failure = failure if failure and "does not verify" in str(failure) else exc
    raise failure or CheckpointError("no signature by the given key on the checkpoint")


def verify_checkpoint(
    note: str, public_key: Ed25519PublicKey | str, key_name: str | None = None
) -> ParsedCheckpoint:
    """Parse a signed checkpoint and check its signature; raise CheckpointError otherwise.

    ``public_key`` is a key or a verifier key string (which carries the name). Without a
    name the signature line's name is used, and the key hash must match it.
    """
    if isinstance(public_key, str):
        key_name, public_key = parse_verifier_key(public_key)
    if not note.endswith("\n"):
        raise CheckpointError("a signed note ends with a newline")
    body, sep, sigs = note.rpartition("\n\n")
    if not sep or not body:
        raise CheckpointError("checkpoint note has no signature block")
    body += "\n"
    lines = body[:-1].split("\n")
    if len(lines) < 3 or any(line == "" for line in lines):
        raise CheckpointError("checkpoint note body is malformed")
    origin, size_text, root_text, *extensions = lines
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise CheckpointError("checkpoint tree size is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error as exc:
        raise CheckpointError("checkpoint root is not base64") from exc
    if len(root) != 32:
        raise CheckpointError("checkpoint root is not a SHA-256 hash")
    time_us = None
    for ext in extensions:
        if ext.startswith("time "):
            time_us = parse_time(ext[5:])
    signatures: list[tuple[str, bytes]] = []
    for line in sigs[:-1].split("\n"):
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError("malformed signature line")
        name, _, blob_text = line[len(_SIG_PREFIX) :].rpartition(" ")
        try:
            blob = base64.b64decode(blob_text, validate=True)
        except binascii.Error as exc:
            raise CheckpointError("signature is not base64") from exc
        if not name or len(blob) < 5:
            raise CheckpointError("malformed signature line")
        signatures.append((name, blob))
    for name, blob in signatures:
        if key_name is not None and name != key_name:
            continue
        if len(blob) != 68 or blob[:4] != key_hash(name, public_key):
            continue
        try:
            public_key.verify(blob[4:], body.encode("utf-8"))
        except InvalidSignature as exc:
            raise CheckpointError("checkpoint signature does not verify") from exc
        return ParsedCheckpoint(origin, int(size_text), root, time_us, name)
    raise CheckpointError("no signature by the given key on the checkpoint")


__all__ = [
    "CheckpointError",
    "CheckpointSigner",
    "LedgerKeys",
    "ParsedCheckpoint",
    "checkpoint_body",
    "init_signing_key",
    "load_public_key",
    "parse_verifier_key",
    "verifier_key",
    "verify_checkpoint",
    "verify_checkpoint_any",
]
