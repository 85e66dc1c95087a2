"""SMTP smuggling defence (CVE-2023-51764/51765/51766 class) and canonical outgoing bytes.

Smuggling works when two SMTP hops disagree on where DATA ends: one hop ends it at
``<LF>.<LF>`` or ``<CR>.<CR>`` (or skips a NUL), the next only at ``<CR><LF>.<CR><LF>``, so
what one sees as body text the other runs as a second, forged transaction.

How aiosmtpd 1.4.6 reads DATA (``SMTP.smtp_DATA``): ``readuntil(b"\\r\\n")`` line by line, and
only a line that is exactly ``.\\r\\n`` ends it, so the server itself never splits a message at a
bare CR or LF; such bytes stay inside the one message it hands to the handler
(CVE-2024-27305, where it did, was fixed in 1.4.5). The danger is the next hop: if the relay
forwarded those bytes, a laxer smarthost could split them. So the relay refuses, with a
specific 5.5.2 reply, any message whose data holds a bare CR, a bare LF or a NUL (which some
C implementations treat as the end of a line): the same choice as Postfix's
``smtpd_forbid_bare_newline = yes``. It never "normalises": normalising at one hop is what
manufactures a clean end-of-data for the next one.

Outgoing mail (``to_wire``) always has CRLF line endings and dot-stuffing.
"""

from __future__ import annotations

import re

from mailveil.relay import codes
from mailveil.relay.errors import BareLineEnding, NulInData, RelayRefusal

# One pass finds the first offending byte of any kind, so the reply names what came first.
_OFFENDING = re.compile(rb"(?<!\r)\n|\r(?!\n)|\x00")
_ANY_EOL = re.compile(rb"\r\n|\r|\n")


def _only_crlf(data: bytes) -> bool:
    """Every CR and every LF of ``data`` is part of a CRLF: as many CRs as LFs as CRLFs (three
    counts in C, where the regular expressions below try every byte position)."""
    crlf = data.count(b"\r\n")
    return data.count(b"\n") == crlf and data.count(b"\r") == crlf


def check_data(data: bytes) -> None:
    """Raise the specific refusal for the first bare LF, bare CR or NUL in ``data``."""
    if b"\x00" not in data and _only_crlf(data):
        return
    match = _OFFENDING.search(data)
    if match is None:
        return
    found = match.group(0)
    at = match.start()
    if found == b"\n":
        raise BareLineEnding(f"bare LF at offset {at}", reply=codes.BARE_LF)
    if found == b"\r":
        raise BareLineEnding(f"bare CR at offset {at}", reply=codes.BARE_CR)
    raise NulInData(f"NUL at offset {at}")


def refusal_for(data: bytes) -> codes.Reply | None:
    """The reply for smuggling-shaped ``data``, or None when it is clean."""
    try:
        check_data(data)
    except RelayRefusal as exc:
        return exc.reply
    return None


def canonical_crlf(message: bytes) -> bytes:
    """Every line ending (CRLF, bare CR, bare LF) as CRLF, and a final CRLF.

    For clients that dot-stuff themselves (smtplib, aiosmtplib); use ``to_wire`` for raw sockets.
    """
    body = message if _only_crlf(message) else _ANY_EOL.sub(b"\r\n", message)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body


def to_wire(message: bytes) -> bytes:
    """The exact bytes to send after a 354 reply: CRLF lines, dot-stuffed, ending ``.\\r\\n``.

    A NUL is refused rather than sent: a next hop may read it as the end of a line.
    """
    if b"\x00" in message:
        raise NulInData("NUL in outgoing message")
    body = canonical_crlf(message)
    # RFC 5321 4.5.2: a line starting with "." gets one more; the receiver removes it.
    if body.startswith(b"."):
        body = b"." + body
    body = body.replace(b"\r\n.", b"\r\n..")
    return body + b".\r\n"


__all__ = ["canonical_crlf", "check_data", "refusal_for", "to_wire"]
