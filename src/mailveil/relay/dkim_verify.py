"""DKIM verification of incoming mail (dkimpy), bounded and safe on hostile input.

Each DKIM-Signature gets one result in RFC 8601 words:

* ``pass``: the signature verifies;
* ``fail``: the key was found but the signature or the body hash does not match;
* ``permerror``: the signature or key cannot be used (malformed tags, ``h=`` without From,
  no key record, revoked or unacceptable key, unknown algorithm);
* ``temperror``: DNS did not answer in time;
* ``policy``: it verifies but only covers part of the body (``l=``), so anyone may append
  text after the signed part: it does not authenticate the message we deliver.

A signature that verifies proves who wrote the signed fields and body, not who sent this copy
to us: anyone holding a signed message can send it again, unchanged, to other addresses (a
replay). With ``rcpt`` (the address the mail arrived at), each result also says what the
signature covers of the recipient, in ``coverage``:

* ``rcpt``: ``h=`` signs To or Cc, and the signed instances name ``rcpt``: the signer
  addressed this very mailbox;
* ``other``: ``h=`` signs To or Cc, but the signed instances name other addresses only: a
  copy of mail the signer wrote to someone else;
* ``none``: To and Cc are not signed: the signature says nothing about the recipient;
* empty: no ``rcpt`` was given (or the signature could not be read).

Bounds, because the sender chooses the work: only the first ``MAX_DKIM_SIGNATURES``
signatures (top-most first) are verified and the rest are counted as skipped; a signature
header over ``MAX_SIGNATURE_HEADER_BYTES`` or with more than ``MAX_SIGNED_FIELDS`` names in
``h=`` is a permerror without further work; key records over ``MAX_KEY_RECORD_BYTES``, RSA keys
over ``MAX_RSA_BITS`` or with a public exponent over 2**32 are refused before dkimpy does
arithmetic with them; DNS questions stop at the caller's deadline.

dkimpy logs signature tags (``i=`` can be the sender's address) at debug level: it gets a
logger that writes nothing.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from typing import Any, NamedTuple

from mailveil.relay.dmarc import normalise_domain
from mailveil.relay.dns import DnsTemporaryError, Resolver, encode_txt

MAX_DKIM_SIGNATURES = 5
MAX_SIGNATURE_HEADER_BYTES = 4096
MAX_SIGNED_FIELDS = 100
MAX_KEY_RECORD_BYTES = 4096
MAX_RSA_BITS = 8192
MIN_RSA_BITS = 1024


COVERAGES = ("rcpt", "other", "none")
_ADDRESS_FIELDS = (b"to", b"cc")


class DkimResult(NamedTuple):
    domain: str
    selector: str
    result: str
    coverage: str = ""  # rcpt | other | none, or "" when not asked (module docstring)


class _DnsTemporary(Exception):
    """Raised through dkimpy (which does not catch it) to report a DNS temperror."""


@functools.cache
def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger("mailveil.relay.dkimpy")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    logger.setLevel(logging.CRITICAL + 10)
    return logger


def _tag_text(value: Any, limit: int = 255) -> str:
    if not isinstance(value, bytes):
        return ""
    return value.decode("ascii", "replace").strip().lower()[:limit]


def _key_usable(name: bytes, record: bytes) -> bool:
    """Parse the key as dkimpy will, and refuse revoked keys and RSA keys whose arithmetic
    would be costly (the sender chooses them).

    dkimpy turns an unparsable key into a plain "does not verify"; parsing it here first
    lets the result say permerror (the key is unusable) rather than fail.
    """
    import dkim

    try:
        key, _size, ktag, _tlsrpt = dkim.evaluate_pk(name, record)
    except Exception:
        return False
    if key is None:
        return False
    if ktag == b"rsa":
        modulus, exponent = key["modulus"], key["publicExponent"]
        return bool(modulus.bit_length() <= MAX_RSA_BITS and 0 < exponent < 2**32)
    return True


class _KeyLookup:
    """dkimpy's ``dnsfunc``: the key record for ``<s>._domainkey.<d>.`` from our resolver."""

    def __init__(self, resolver: Resolver, deadline: float) -> None:
        self.resolver = resolver
        self.deadline = deadline
        self.unusable = False

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        self.unusable = False
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            self.unusable = True
            return None
        domain = normalise_domain(text)
        if domain is None:
            self.unusable = True
            return None
        if time.monotonic() > self.deadline:
            raise _DnsTemporary
        try:
            records = self.resolver.txt(domain)
        except DnsTemporaryError as exc:
            raise _DnsTemporary from exc
        if not records:
            self.unusable = True
            return None
        # RFC 6376 3.6.2.2: with several records the verifier may use any; take the first.
        record = encode_txt(records[0])
        if len(record) > MAX_KEY_RECORD_BYTES or not _key_usable(name, record):
            self.unusable = True
            return None
        return record


class _Tags(NamedTuple):
    domain: str
    selector: str
    decided: str | None  # the result, when the tags alone decide it
    partial: bool  # l= present
    signed: tuple[bytes, ...]  # h=, lower-cased


def _precheck(value: bytes) -> _Tags:
    """The tags a result needs, and the result itself when they already decide it."""
    from dkim.util import parse_tag_value

    if len(value) > MAX_SIGNATURE_HEADER_BYTES:
        return _Tags("", "", "permerror", False, ())
    try:
        tags = parse_tag_value(value)
    except Exception:
        return _Tags("", "", "permerror", False, ())
    domain, selector = _tag_text(tags.get(b"d")), _tag_text(tags.get(b"s"))
    signed = tuple(f.strip().lower() for f in re.split(rb":", tags.get(b"h", b"")))
    if len(signed) > MAX_SIGNED_FIELDS or b"from" not in signed:
        # RFC 6376 5.4: From must be signed; without it the signature says nothing about
        # who wrote the message.
        return _Tags(domain, selector, "permerror", False, ())
    return _Tags(domain, selector, None, b"l" in tags, signed)


def _signed_instances(headers: list[tuple[bytes, bytes]], signed: tuple[bytes, ...]) -> list[bytes]:
    """The To and Cc values a signature covers: RFC 6376 5.4.2 takes each name listed in h=
    from the bottom of the header section up, one instance per listing."""
    out: list[bytes] = []
    for name in _ADDRESS_FIELDS:
        wanted = signed.count(name)
        if wanted:
            found = [v for k, v in headers if k.strip().lower() == name]
            out.extend(found[::-1][:wanted])
    return out


def coverage_of(headers: list[tuple[bytes, bytes]], signed: tuple[bytes, ...], rcpt: str) -> str:
    """``rcpt``, ``other`` or ``none`` (module docstring) for one signature's ``h=``."""
    import email.utils

    if not any(name in signed for name in _ADDRESS_FIELDS):
        return "none"
    wanted = rcpt.strip().strip("<>").lower()
    for value in _signed_instances(headers, signed):
        text = value.decode("utf-8", "replace")[: 16 * 1024]
        for _name, address in email.utils.getaddresses([text]):
            if address.strip().lower() == wanted:
                return "rcpt"
    return "other"


def _verify_one(
    verifier: Any, idx: int, value: bytes, lookup: _KeyLookup, rcpt: str | None
) -> DkimResult:
    import dkim

    tags = _precheck(value)
    domain, selector = tags.domain, tags.selector
    if tags.decided is not None:
        return DkimResult(domain, selector, tags.decided)
    coverage = coverage_of(verifier.headers, tags.signed, rcpt) if rcpt else ""
    try:
        ok = verifier.verify(idx=idx, dnsfunc=lookup)
    except _DnsTemporary:
        return DkimResult(domain, selector, "temperror", coverage)
    except dkim.ValidationError as exc:
        mismatch = "body hash mismatch" in str(exc)
        return DkimResult(domain, selector, "fail" if mismatch else "permerror", coverage)
    except Exception:
        # dkimpy raises many kinds of errors on damaged input; none of them is a pass.
        return DkimResult(domain, selector, "permerror", coverage)
    if ok:
        return DkimResult(domain, selector, "policy" if tags.partial else "pass", coverage)
    return DkimResult(domain, selector, "permerror" if lookup.unusable else "fail", coverage)


def verify_dkim(
    message: bytes,
    *,
    resolver: Resolver,
    deadline: float,
    max_signatures: int = MAX_DKIM_SIGNATURES,
    rcpt: str | None = None,
) -> tuple[list[DkimResult], int]:
    """(results of the first ``max_signatures`` signatures, number skipped). Never raises.
    ``rcpt``: the address the mail arrived at, for each result's ``coverage``."""
    import dkim

    try:
        verifier = dkim.DKIM(message, logger=_quiet_logger(), minkey=MIN_RSA_BITS)
    except Exception:
        # The header section cannot be read; any signature in it is unusable.
        head = message.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0].lower()
        return ([DkimResult("", "", "permerror")] if b"dkim-signature" in head else [], 0)
    values = [v for name, v in verifier.headers if name.lower() == b"dkim-signature"]
    lookup = _KeyLookup(resolver, deadline)
    results = [
        _verify_one(verifier, idx, value, lookup, rcpt)
        for idx, value in enumerate(values[: max(0, max_signatures)])
    ]
    return (results, max(0, len(values) - max(0, max_signatures)))


__all__ = [
    "COVERAGES",
    "MAX_DKIM_SIGNATURES",
    "MAX_RSA_BITS",
    "MAX_SIGNATURE_HEADER_BYTES",
    "DkimResult",
    "coverage_of",
    "verify_dkim",
]
