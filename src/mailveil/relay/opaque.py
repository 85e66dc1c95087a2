"""Finding an address in content the relay cannot rewrite: binary parts, OpenPGP keys and
signatures, S/MIME signatures and certificates, cleartext-signed text.

A binary part is searched as bytes, and as UTF-16 (every other byte: Office and TNEF files keep
text so). ASCII-armored OpenPGP data (RFC 9580 section 6) is de-armored first: a key's user ID
(``Ada <ada@example.net>``) and a signature's signer's user ID are UTF-8 inside the packets.
An X.509 certificate names its holder in IA5 strings, which the byte search sees. Compressed or
encrypted content (a zip, a PDF stream, an OpenPGP or S/MIME encrypted message) cannot be read
here: attachment policy is the guard for those.
"""

from __future__ import annotations

import base64
import binascii
import re

from mailveil.relay.address_forms import AT_GATE_BYTES, Matcher, reader_view

OPENPGP_TYPES = frozenset(
    {"application/pgp-keys", "application/pgp-signature", "application/pgp-encrypted"}
)
_ARMOR = re.compile(
    rb"-----BEGIN PGP ([A-Z0-9 ,/]{1,40})-----[ \t]*\r?\n(.*?)-----END PGP \1-----", re.DOTALL
)
# Text that cannot be changed without breaking what it carries: armored blocks and
# cleartext-signed messages (the signed text through its signature).
_ARMOR_TEXT = re.compile(
    r"-----BEGIN PGP SIGNED MESSAGE-----.*?-----END PGP SIGNATURE-----"
    r"|-----BEGIN PGP ([A-Z0-9 ,/]{1,40})-----.*?-----END PGP \1-----",
    re.DOTALL,
)
_ARMOR_HEADERS_END = re.compile(rb"\r?\n\r?\n")


def dearmor(data: bytes) -> list[bytes]:
    """The packets of each ASCII-armored OpenPGP block in ``data``."""
    out: list[bytes] = []
    for match in _ARMOR.finditer(data):
        body = match.group(2)
        end = _ARMOR_HEADERS_END.search(body)
        if end is not None and b":" in body[: end.start()]:
            body = body[end.end() :]  # Armor headers (Version:, Comment:) come first.
        lines = [line.strip() for line in body.splitlines()]
        letters = b"".join(line for line in lines if line and not line.startswith(b"="))
        try:
            out.append(base64.b64decode(letters + b"=" * (-len(letters) % 4)))
        except (binascii.Error, ValueError):
            out.append(b"")
    return out


def binary_shows(data: bytes, matcher: Matcher) -> bool:
    """Whether ``data`` (a decoded binary part) holds a matched address, armored or not, as
    bytes or as UTF-8 text (fullwidth letters, invisible characters)."""
    if matcher.found_bytes(data, wide=True):
        return True
    if (
        not data.isascii()
        and AT_GATE_BYTES.search(data)
        and matcher.found(reader_view(data.decode("utf-8", "ignore")))
    ):
        return True
    return b"-----BEGIN PGP " in data and any(
        matcher.found_bytes(block, wide=True) for block in dearmor(data)
    )


def armored_spans(text: str) -> list[tuple[int, int]]:
    """Where ``text`` holds OpenPGP armor or cleartext-signed text (character offsets)."""
    if "-----BEGIN PGP " not in text:
        return []
    return [match.span() for match in _ARMOR_TEXT.finditer(text)]


__all__ = ["OPENPGP_TYPES", "armored_spans", "binary_shows", "dearmor"]
