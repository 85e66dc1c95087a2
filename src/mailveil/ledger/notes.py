"""C2SP signed notes, verifier keys and tlog cosignatures: formatting, parsing, verifying.

Three specifications meet here, all followed to the letter so that any C2SP tool (Go's
``golang.org/x/mod/sumdb/note``, transparency-dev's witness) reads what mailveil writes and
the other way round:

- **signed-note**: a text ending in a newline, a blank line, then signature lines
  ``— <key name> base64(key ID[4] || signature)``. A verifier key (*vkey*) is
  ``<name>+<hex key ID>+base64(signature type || public key)``; the key ID is
  ``SHA-256(name || "\\n" || type || public key)[:4]``.
- **tlog-checkpoint**: the note text of a log's tree head: origin, tree size, base64 root,
  then optional extension lines (mailveil writes ``time <RFC 3339>``).
- **tlog-cosignature**, Ed25519 ``cosignature/v1`` (signature type 0x04): a witness signs
  ``"cosignature/v1\\ntime <T>\\n" || checkpoint text`` and its signature is
  ``timestamp (u64 big-endian) || Ed25519 signature``.

Parsing and verifying follow Go's ``note.Open``: valid UTF-8 without control characters but
newline, the signatures after the *last* blank line, at most 100 signature lines, unknown
keys ignored, a signature by a known key that fails makes the whole note invalid, and a
note with no verified signature is refused.

The ledger's own signer (``signing.py``) writes type 0x01 notes; this module holds what
checking them, witnessing them and publishing their keys needs, kept apart so key custody
can change in ``signing.py`` without touching the formats.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01  # signed-note Ed25519 (the ledger's checkpoint signatures)
ALG_COSIGNATURE_V1 = 0x04  # tlog-cosignature Ed25519 cosignature/v1 (witnesses)
ALGORITHMS = {ALG_ED25519: "ed25519", ALG_COSIGNATURE_V1: "cosignature/v1"}
SIG_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 100  # what Go's note.Open accepts; the spec asks for at least 16
MAX_TIMESTAMP = 2**63 - 1
COSIGNATURE_HEADER = "cosignature/v1\n"
EMPTY_ROOT = hashlib.sha256(b"").digest()


class NoteError(ValueError):
    """A note, key or checkpoint is malformed, or a signature on it does not verify."""


def valid_key_name(name: str) -> bool:
    """Non-empty, no Unicode space, no '+': the signed-note rule for key names."""
    return bool(name) and not any(c.isspace() for c in name) and "+" not in name


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()[:4]


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class VerifierKey:
    """A named Ed25519 public key of one signature type (0x01 or 0x04)."""

    name: str
    alg: int
    public_key: bytes  # the 32 raw bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.alg, self.public_key)

    @property
    def vkey(self) -> str:
        encoded = base64.b64encode(bytes([self.alg]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode()

    def ed25519(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_key)

    def __str__(self) -> str:
        return self.vkey

    def document(self) -> dict[str, str]:
        """Every published form of the key (`mailveil ledger key --json`, GET /v1/ledger/key)."""
        return {
            "verifier_key": self.vkey,
            "key_name": self.name,
            "key_id": self.key_id.hex(),
            "algorithm": ALGORITHMS[self.alg],
            "public_key": self.public_key_b64,
        }


def verifier_key(name: str, public_key: Ed25519PublicKey, alg: int = ALG_ED25519) -> VerifierKey:
    if not valid_key_name(name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return VerifierKey(name, alg, raw_public(public_key))


def parse_vkey(
    text: str, *, algs: Iterable[int] = (ALG_ED25519, ALG_COSIGNATURE_V1)
) -> VerifierKey:
    """A verifier key string, checked: 8 hex digits of key ID that match the name and key."""
    # Split on the first two '+' only: the base64 key material may hold '+' too.
    name, sep1, rest = text.strip().partition("+")
    hex_id, sep2, encoded = rest.partition("+")
    if not sep1 or not sep2:
        raise NoteError("a verifier key is <name>+<8 hex digits>+<base64 key>")
    if not valid_key_name(name):
        raise NoteError(f"verifier key name {name!r} is not a valid key name")
    raw = _b64(encoded, "the verifier key's key material")
    if len(raw) != 33:
        raise NoteError("the verifier key is not an Ed25519 key (33 bytes with its type)")
    alg = raw[0]
    if alg not in tuple(algs):
        wanted = " or ".join(ALGORITHMS.get(a, hex(a)) for a in algs)
        raise NoteError(f"the verifier key has signature type {alg:#04x}; expected {wanted}")
    key = VerifierKey(name, alg, raw[1:])
    if len(hex_id) != 8 or hex_id.lower() != key.key_id.hex():
        raise NoteError("the verifier key's key ID does not match its name and key")
    try:
        key.ed25519()
    except ValueError as exc:
        raise NoteError("the verifier key is not a valid Ed25519 key") from exc
    return key


def log_key(text: str, name: str | None = None) -> VerifierKey:
    """The ledger's checkpoint key in either published form: the vkey string, or the plain
    base64 Ed25519 key (``public_key`` of ``GET /v1/ledger/checkpoint``), which is then named
    ``name`` (the checkpoint's origin: the log's key name matches it)."""
    text = text.strip()
    if not _is_b64_key(text):  # a vkey is longer than any base64 of 32 bytes
        try:
            return parse_vkey(text, algs=(ALG_ED25519,))
        except NoteError as exc:
            raise NoteError(
                f"{exc}; give the ledger's verifier key (`mailveil ledger key`, "
                "GET /v1/ledger/key) or its base64 Ed25519 public key"
            ) from exc
    if name is None:
        raise NoteError("a plain base64 key needs the key name (the checkpoint origin)")
    if not valid_key_name(name):
        raise NoteError(f"the checkpoint origin {name!r} is not a valid key name")
    return VerifierKey(name, ALG_ED25519, base64.b64decode(text))


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise NoteError(f"{what} is not base64") from exc


def _is_b64_key(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) == 32
    except binascii.Error:
        return False


# -- notes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes  # after the key ID

    @property
    def line(self) -> str:
        blob = base64.b64encode(self.key_id + self.signature).decode()
        return f"{SIG_PREFIX}{self.name} {blob}\n"

    @property
    def timestamp(self) -> int | None:
        """The cosignature/v1 timestamp, if the signature has that shape."""
        if len(self.signature) != 8 + 64:
            return None
        return int(struct.unpack(">Q", self.signature[:8])[0])


@dataclass(frozen=True)
class Note:
    text: str  # up to and including the newline before the blank line
    signatures: tuple[NoteSignature, ...]

    def serialise(self) -> str:
        return self.text + "\n" + "".join(s.line for s in self.signatures)


def _check_chars(data: str) -> None:
    for ch in data:
        if ch < " " and ch != "\n":
            raise NoteError("a signed note holds a control character other than newline")
    try:
        data.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NoteError("a signed note is not valid UTF-8") from exc


def parse_signature_line(line: str) -> NoteSignature:
    """One signature line without its newline."""
    if not line.startswith(SIG_PREFIX):
        raise NoteError("a signature line starts with an em dash and a space")
    name, sep, blob_text = line[len(SIG_PREFIX) :].partition(" ")
    if not sep or not valid_key_name(name) or not blob_text:
        raise NoteError("malformed signature line")
    blob = _b64(blob_text, "a signature")
    if len(blob) < 5:
        raise NoteError("a signature is shorter than its key ID")
    return NoteSignature(name, blob[:4], blob[4:])


def parse_signature_lines(block: str) -> list[NoteSignature]:
    """Signature lines, each ending in a newline (a witness's add-checkpoint answer)."""
    if not block or not block.endswith("\n"):
        raise NoteError("signature lines end with a newline")
    _check_chars(block)
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signatures")
    return [parse_signature_line(line) for line in lines]


def parse_note(data: str | bytes) -> Note:
    """Split a signed note into text and signatures, checking its framing only."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError("a signed note is not valid UTF-8") from exc
    _check_chars(data)
    split = data.rfind("\n\n")
    if split < 0:
        raise NoteError("a signed note has no blank line before its signatures")
    text, sigs = data[: split + 1], data[split + 2 :]
    if not sigs.endswith("\n"):
        raise NoteError("a signed note ends with a newline after its signatures")
    return Note(text, tuple(parse_signature_lines(sigs)))


def cosignature_message(timestamp: int, text: str) -> bytes:
    """What an Ed25519 cosignature/v1 signs."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError("cosignature timestamp out of range")
    if text.count("\n") < 3:
        raise NoteError("a cosigned checkpoint has at least three lines")
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{text}".encode()


def cosign(private_key: Ed25519PrivateKey, name: str, text: str, timestamp: int) -> NoteSignature:
    """An Ed25519 cosignature/v1 over a checkpoint text, made at ``timestamp`` (seconds)."""
    _check_text(text)
    if timestamp <= 0:
        raise NoteError("a witness cosignature carries a timestamp (seconds since 1970)")
    kid = key_id(name, ALG_COSIGNATURE_V1, raw_public(private_key.public_key()))
    signature = private_key.sign(cosignature_message(timestamp, text))
    return NoteSignature(name, kid, struct.pack(">Q", timestamp) + signature)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("a note text ends with a newline")
    _check_chars(text)


def _verifies(key: VerifierKey, text: bytes, sig: bytes) -> bool:
    if key.alg == ALG_COSIGNATURE_V1:
        if len(sig) != 8 + 64:
            return False
        timestamp = struct.unpack(">Q", sig[:8])[0]
        if timestamp > MAX_TIMESTAMP or text.count(b"\n") < 3:
            return False
        message = f"{COSIGNATURE_HEADER}time {timestamp}\n".encode() + text
        sig = sig[8:]
    elif key.alg == ALG_ED25519:
        if len(sig) != 64:
            return False
        message = text
    else:
        return False
    try:
        key.ed25519().verify(sig, message)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class VerifiedSignature:
    key: VerifierKey
    signature: NoteSignature

    @property
    def timestamp(self) -> int | None:
        return self.signature.timestamp if self.key.alg == ALG_COSIGNATURE_V1 else None


@dataclass
class OpenedNote:
    text: str
    verified: list[VerifiedSignature] = field(default_factory=list)
    unverified: list[NoteSignature] = field(default_factory=list)

    def by(self, key: VerifierKey) -> VerifiedSignature | None:
        return next((v for v in self.verified if v.key == key), None)


def open_note(
    data: str | bytes | Note, keys: Sequence[VerifierKey], *, require_one: bool = True
) -> OpenedNote:
    """Verify a note against known keys, with Go's ``note.Open`` rules (see the module
    docstring). ``require_one=False`` returns a note none of the keys signed instead of
    refusing it (for callers that count signatures themselves)."""
    note = data if isinstance(data, Note) else parse_note(data)
    known = {(k.name, k.key_id): k for k in keys}
    text = note.text.encode("utf-8")
    opened = OpenedNote(note.text)
    seen: set[tuple[str, bytes]] = set()
    seen_unknown: set[str] = set()
    for sig in note.signatures:
        key = known.get((sig.name, sig.key_id))
        if key is None:
            if sig.line not in seen_unknown:
                seen_unknown.add(sig.line)
                opened.unverified.append(sig)
            continue
        if (sig.name, sig.key_id) in seen:
            continue  # a repeated signature by one key counts once
        seen.add((sig.name, sig.key_id))
        if not _verifies(key, text, sig.signature):
            raise NoteError(f"the signature by {sig.name} does not verify")
        opened.verified.append(VerifiedSignature(key, sig))
    if require_one and not opened.verified:
        raise NoteError("no signature by a known key on the note")
    return opened


# -- checkpoints -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointText:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...]


def parse_checkpoint_text(text: str) -> CheckpointText:
    """The three mandatory lines of a C2SP checkpoint (and its extension lines)."""
    if not text.endswith("\n"):
        raise NoteError("a checkpoint ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(line == "" for line in lines):
        raise NoteError("a checkpoint has an origin, a size and a root line, none empty")
    origin, size_text, root_text, *extensions = lines
    if not size_text.isascii() or not size_text.isdigit():
        raise NoteError("the checkpoint's tree size is not a decimal number")
    if size_text != "0" and size_text.startswith("0"):
        raise NoteError("the checkpoint's tree size has a leading zero")
    size = int(size_text)
    if size >= 2**64:
        raise NoteError("the checkpoint's tree size is out of range")
    root = _b64(root_text, "the checkpoint's root hash")
    if len(root) != 32:
        raise NoteError("the checkpoint's root hash is not 32 bytes")
    return CheckpointText(origin, size, root, tuple(extensions))


def origin_of(note_text: str) -> str:
    """The first line of a note (a checkpoint's origin), without verifying anything."""
    return note_text.partition("\n")[0]


__all__ = [
    "ALGORITHMS",
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "EMPTY_ROOT",
    "CheckpointText",
    "Note",
    "NoteError",
    "NoteSignature",
    "OpenedNote",
    "VerifiedSignature",
    "VerifierKey",
    "cosign",
    "cosignature_message",
    "key_id",
    "log_key",
    "open_note",
    "origin_of",
    "parse_checkpoint_text",
    "parse_note",
    "parse_signature_lines",
    "parse_vkey",
    "verifier_key",
]
