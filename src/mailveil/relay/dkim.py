"""DKIM keys and signing for mail the relay sends out on its own domain.

Every outgoing message gets two signatures (RFC 8463 recommends dual signing while receivers
adopt Ed25519): ``ed25519-sha256`` under ``settings.dkim_selector_ed25519`` and ``rsa-sha256``
(2048-bit) under ``settings.dkim_selector_rsa``, both ``c=relaxed/relaxed``, ``d=`` the relay
domain. ``From`` is signed twice so a second ``From`` added on the way breaks both.

The DKIM-Signature header is built by dkimpy's own functions (header selection,
canonicalisation, folding, the ``b=``-stripping rule), so the bytes are exactly what
``dkim.DKIM.sign`` writes for the same time stamp (a test holds us to that). Only the
private-key operation runs in OpenSSL through ``cryptography``: dkimpy computes RSA with
Python integers, about 6 ms per signature against 0.3 ms, and the relay signs every message.
The body hash is computed once and shared by both signatures.

Keys live in ``settings.keys_dir``, mode 0600, named by selector, so a new selector (key
rotation) means new files beside the old ones:

* ``dkim-<selector>.ed25519.key``: the 32-byte Ed25519 seed;
* ``dkim-<selector>.rsa.pem``: the RSA key, PKCS#8 PEM.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mailveil.config import Settings
from mailveil.keyfiles import KeyFileError, read_secret, write_secret

ED25519_SHA256 = b"ed25519-sha256"
RSA_SHA256 = b"rsa-sha256"
RSA_BITS = 2048

# Signed when present, in this order; "from" is added once more at the end (over-signing).
SIGNED_FIELDS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"reply-to",
    b"in-reply-to",
    b"references",
    b"list-unsubscribe",  # RFC 8058: the one-click fields must be covered by the signature
    b"list-unsubscribe-post",
)
OVERSIGNED_FIELDS: tuple[bytes, ...] = (b"from",)

_HEADER_NAME = b"DKIM-Signature"
_SELECTOR = re.compile(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)


class DkimError(ValueError):
    """A DKIM key is unusable or a message cannot be signed (it is not RFC 5322 shaped)."""


def _check_selector(selector: str) -> None:
    if not _SELECTOR.match(selector):
        raise DkimError(f"DKIM selector {selector!r} is not a DNS label")


def ed25519_key_path(settings: Settings) -> Path:
    return settings.keys_dir / f"dkim-{settings.dkim_selector_ed25519}.ed25519.key"


def rsa_key_path(settings: Settings) -> Path:
    return settings.keys_dir / f"dkim-{settings.dkim_selector_rsa}.rsa.pem"


def _new_ed25519() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes_raw()


def _new_rsa() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def init_dkim_keys(settings: Settings) -> list[str]:
    """Create the relay domain's Ed25519 and RSA DKIM keys if missing (idempotent).

    Returns the DNS records to publish, as zone-file lines (long values split into
    255-character strings), one per key.
    """
    _check_selector(settings.dkim_selector_ed25519)
    _check_selector(settings.dkim_selector_rsa)
    rolled = _state_path(settings).exists()  # then it names the keys
    for path, make in (
        ()
        if rolled
        else (
            (ed25519_key_path(settings), _new_ed25519),
            (rsa_key_path(settings), _new_rsa),
        )
    ):
        if not path.exists():
            # Another process may create it first; then theirs is the key.
            with contextlib.suppress(KeyFileError, FileExistsError):
                write_secret(path, make())
    records = DkimSigner.load(settings).dns_records()
    return [zone_line(name, value) for name, value in records.items()]


def zone_line(name: str, value: str) -> str:
    """``name. IN TXT ( "..." "..." )`` with each character-string at most 255 octets."""
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    quoted = " ".join(f'"{c}"' for c in chunks)
    return f"{name}. IN TXT ( {quoted} )" if len(chunks) > 1 else f"{name}. IN TXT {quoted}"


@dataclass(frozen=True)
class DkimKey:
    """One signing key: its algorithm tag, selector and private key."""

    algorithm: bytes
    selector: str
    private_key: Ed25519PrivateKey | rsa.RSAPrivateKey

    def public_b64(self) -> str:
        if isinstance(self.private_key, Ed25519PrivateKey):
            raw = self.private_key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        else:
            raw = self.private_key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return base64.b64encode(raw).decode("ascii")

    def record_value(self) -> str:
        ktag = "ed25519" if self.algorithm == ED25519_SHA256 else "rsa"
        return f"v=DKIM1; k={ktag}; p={self.public_b64()}"

    def sign_digest(self, digest: bytes) -> bytes:
        # RFC 8463: Ed25519 signs the SHA-256 hash of the header data (not the data itself).
        if isinstance(self.private_key, Ed25519PrivateKey):
            return self.private_key.sign(digest)
        return self.private_key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def load_ed25519_key(path: Path, selector: str) -> DkimKey:
    seed = read_secret(path)
    if len(seed) != 32:
        raise KeyFileError(f"{path} is not a 32-byte Ed25519 seed")
    return DkimKey(ED25519_SHA256, selector, Ed25519PrivateKey.from_private_bytes(seed))


def load_rsa_key(path: Path, selector: str) -> DkimKey:
    try:
        key = serialization.load_pem_private_key(read_secret(path), password=None)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 1024:
        raise KeyFileError(f"{path} is not an RSA key of at least 1024 bits")
    return DkimKey(RSA_SHA256, selector, key)


def _dkimpy() -> Any:
    # Imported on first use: nothing is loaded at import time, and dkimpy is only needed here.
    import dkim

    return dkim


def _line_ending(message: bytes) -> bytes:
    end = message.find(b"\n")
    return b"\r\n" if end > 0 and message[end - 1 : end] == b"\r" else b"\n"


# ------------------------------------------------------------------ rollover state (read)

STATE_FILE = "dkim-rollover.json"


@dataclass(frozen=True)
class Generation:
    ed25519: str
    rsa: str
    signs_from: float  # unix time


def _state_path(settings: Settings) -> Path:
    return settings.keys_dir / STATE_FILE


def generations(settings: Settings) -> list[Generation]:
    path = _state_path(settings)
    if not path.exists():
        return [Generation(settings.dkim_selector_ed25519, settings.dkim_selector_rsa, 0.0)]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Generation(g["ed25519"], g["rsa"], float(g["signs_from"])) for g in data]
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path} is damaged ({exc})") from exc


def _keys(settings: Settings, gen: Generation) -> list[DkimKey]:
    d = settings.keys_dir
    return [
        load_ed25519_key(d / f"dkim-{gen.ed25519}.ed25519.key", gen.ed25519),
        load_rsa_key(d / f"dkim-{gen.rsa}.rsa.pem", gen.rsa),
    ]


def load_signer(settings: Settings, now: float | None = None) -> DkimSigner:
    """The signer for now: the newest generation whose time has come signs, every
    generation's records are published (and its signatures recognised)."""
    moment = time.time() if now is None else now
    gens = generations(settings)
    due = [g for g in gens if g.signs_from <= moment] or gens[:1]
    active = due[-1]
    published = [k for g in gens if g != active for k in _keys(settings, g)]
    return DkimSigner(settings.relay_domain, _keys(settings, active), published=published)


class DkimSigner:
    """Signs messages for one domain with its keys (Ed25519 first, then RSA)."""

    def __init__(
        self, domain: str, keys: list[DkimKey], *, published: list[DkimKey] | None = None
    ) -> None:
        if not keys:
            raise DkimError("a DKIM signer needs at least one key")
        self.domain = domain.lower().rstrip(".")
        self.keys = tuple(keys)
        # Keys of other selectors still published during a rollover (dkim_rollover): their
        # records stay in DNS and their signatures are the relay's own; they sign nothing.
        self.published = tuple(published or ())
        self._domain_b = self.domain.encode("ascii")

    @classmethod
    def load(cls, settings: Settings) -> DkimSigner:
        """Read the keys once (the selectors of a rollover in progress, if any); sign() then
        touches no file."""
        return load_signer(settings)

    def dns_records(self) -> dict[str, str]:
        """TXT records to publish: ``<selector>._domainkey.<domain>`` -> ``v=DKIM1; ...``."""
        return {
            f"{k.selector}._domainkey.{self.domain}": k.record_value()
            for k in (*self.keys, *self.published)
        }

    def sign(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """The message with one DKIM-Signature header per key prepended."""
        return b"".join(self.signature_headers(message, timestamp=timestamp)) + message

    def signature_headers(self, message: bytes, *, timestamp: int | None = None) -> list[bytes]:
        dkim = _dkimpy()
        try:
            headers, body = _parse(dkim, message)
        except dkim.MessageFormatError as exc:
            raise DkimError("message header section is malformed") from exc
        present = {name.lower() for name, _ in headers}
        if b"from" not in present:
            raise DkimError("message has no From header field")
        include = [f for f in SIGNED_FIELDS if f in present] + list(OVERSIGNED_FIELDS)

        signed = _fields_hash(dkim, headers, include)
        body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(dkim, body)).digest())
        stamp = str(int(time.time()) if timestamp is None else timestamp).encode("ascii")
        linesep = _line_ending(message)
        return [
            self._one(dkim, key, signed, include, body_hash, stamp, linesep) for key in self.keys
        ]

    def _one(
        self,
        dkim: Any,
        key: DkimKey,
        signed: Any,
        include: list[bytes],
        body_hash: bytes,
        stamp: bytes,
        linesep: bytes,
    ) -> bytes:
        # The tag list, its order, folding and b= placeholder mirror dkim.DKIM.sign exactly.
        fields = [
            (b"v", b"1"),
            (b"a", key.algorithm),
            (b"c", b"relaxed/relaxed"),
            (b"d", self._domain_b),
            (b"i", b"@" + self._domain_b),
            (b"q", b"dns/txt"),
            (b"s", key.selector.encode("ascii")),
            (b"t", stamp),
            (b"h", b" : ".join(include)),
            (b"bh", body_hash),
            (b"b", b"0" * 60),
        ]
        value = b"; ".join(b"=".join(f) for f in fields)
        value = dkim.fold(value, namelen=len(_HEADER_NAME), linesep=b"\r\n")
        value = dkim.RE_BTAG.sub(b"\\1", value)
        # dkim.hash_headers' last step: the signature field itself, canonicalised, b= empty,
        # without its trailing CRLF.
        [(name, text)] = _relaxed_headers(dkim, [(_HEADER_NAME, b" " + value)])
        hasher = signed.copy()
        hasher.update(name + b":" + text.rstrip())
        fields[-1] = (b"b", base64.b64encode(key.sign_digest(hasher.digest())))
        value = b"; ".join(b"=".join(f) for f in fields) + linesep
        folded: bytes = dkim.fold(value, namelen=len(_HEADER_NAME), linesep=linesep)
        return _HEADER_NAME + b": " + folded


# Runs of spaces and tabs that relaxed canonicalisation changes: those holding a tab or longer
# than one space (dkimpy replaces every run, a single space by a single space too).
_WSP_RUNS = re.compile(rb"\t[\t ]*| [\t ]+")
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")


def _compress(value: bytes) -> bytes:
    if b"\t" in value or b"  " in value:
        return _WSP_RUNS.sub(b" ", value)
    return value


def _fields_hash(dkim: Any, headers: list[Any], include: list[bytes]) -> Any:
    """SHA-256 over the signed fields: the same for every key, so canonicalised, selected
    (dkimpy's rule) and hashed once; each signature continues from a copy of it."""
    selected = dkim.select_headers(_relaxed_headers(dkim, headers), include)
    return hashlib.sha256(b"".join(b"%s:%s" % field for field in selected))


def _relaxed_body(dkim: Any, body: bytes) -> bytes:
    """The body canonicalised ``relaxed`` (RFC 6376 3.4.4), exactly as dkimpy does it: white
    space before a line end removed, every other run of spaces and tabs made one space, empty
    lines at the end dropped. Each rewrite runs only where a C search finds something for it
    to change, and replaces only what changes (dkimpy's replaces every single space)."""
    if b" \r\n" in body or b"\t\r\n" in body:
        body = _TRAILING_WSP.sub(b"\r\n", body)
    canon = dkim.canonicalization
    relaxed: bytes = canon.correct_empty_body(canon.strip_trailing_lines(_compress(body)))
    return relaxed


def _relaxed_headers(dkim: Any, headers: list[Any]) -> list[tuple[bytes, bytes]]:
    """``relaxed`` header canonicalisation, exactly as dkimpy's: names lowercased, values
    unfolded, white space compressed and stripped, CRLF-terminated. A value whose line breaks
    are all CRLF is unfolded by a plain replace instead of a regular expression."""
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if value.count(b"\n") == value.count(b"\r\n"):
            unfolded = value.replace(b"\r\n", b"")
        else:
            unfolded = dkim.canonicalization.unfold_header_value(value)
        out.append((name.lower().rstrip(), _compress(unfolded).strip() + b"\r\n"))
    return out


def _parse(dkim: Any, message: bytes) -> tuple[list[list[bytes]], bytes]:
    """``dkim.rfc822_parse``: the header fields and the body with CRLF line ends. A CRLF
    message (what the relay signs) has its header section parsed alone: the body is already
    what dkimpy would give back, so it is not split into lines and joined again."""
    head, sep, body = message.partition(b"\r\n\r\n")
    first_empty = sep and not message.startswith(b"\r\n")
    if first_empty and message.count(b"\n") == message.count(b"\r\n"):
        # No bare LF, no empty first line: the first empty line ends at the first CRLF CRLF.
        headers, _ = dkim.rfc822_parse(head + b"\r\n")
        return headers, body
    parsed: tuple[list[list[bytes]], bytes] = dkim.rfc822_parse(message)
    return parsed


__all__ = [
    "ED25519_SHA256",
    "RSA_SHA256",
    "SIGNED_FIELDS",
    "STATE_FILE",
    "DkimError",
    "DkimKey",
    "DkimSigner",
    "Generation",
    "ed25519_key_path",
    "generations",
    "init_dkim_keys",
    "load_ed25519_key",
    "load_rsa_key",
    "load_signer",
    "rsa_key_path",
    "zone_line",
]
