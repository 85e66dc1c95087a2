"""Reading header fields of hostile messages: decoding, addresses, Received, authentication.

Values are read raw (``raw_items``) and decoded here rather than through the policy's header
objects: those parse on every access, can raise on crafted input, and some of their parsers
are super-linear on long values. Every value is cut to a bounded length first.
"""

from __future__ import annotations

import email.header
import email.utils
import ipaddress
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from email.message import Message

from mailveil.detect.intake_model import (
    Address,
    AuthResult,
    DkimSignature,
    Hop,
    IntakeStats,
    OriginalMessage,
)

# Longest header value read, and how many of one field: more is noise or an attack.
MAX_VALUE_CHARS = 16 * 1024
MAX_FIELDS_OF_A_KIND = 100
MAX_ADDRESSES = 200

_ADDR_SPEC = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253})"
)
_WS = re.compile(r"\s+")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_BRACKETED = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]{2,45})\]")
_HELO = re.compile(r"\b(?:helo|ehlo)[= ]([^\s)\];]{1,255})", re.IGNORECASE)
_FOR = re.compile(r"\bfor\s+<?([^\s<>;]{3,320}@[^\s<>;]{1,255})>?", re.IGNORECASE)
_FROM = re.compile(r"^\s*from\s+(\S{1,255})", re.IGNORECASE)
_BY = re.compile(r"\bby\s+(\S{1,255})", re.IGNORECASE)
_DKIM_TAG = re.compile(r"(?:^|;)\s*([a-z]{1,3})\s*=\s*([^;]*)", re.IGNORECASE)
_AR_METHOD = re.compile(r"^\s*([A-Za-z0-9_.-]{1,40})\s*=\s*([A-Za-z0-9_-]{1,40})(.*)$", re.DOTALL)
_AR_PROP = re.compile(r"([A-Za-z0-9_-]{1,40}\.[A-Za-z0-9_.-]{1,80})\s*=\s*(\"[^\"]*\"|[^\s;]+)")
_COMMENT = re.compile(r"\([^()]*\)")
_FRACTION = re.compile(r"(\d{1,2}:\d{2}:\d{2})\.\d{1,9}")


def text_of(raw: str, stats: IntakeStats | None = None) -> str:
    """A raw header value as text: 8-bit bytes read as UTF-8 (or Latin-1), RFC 2047 decoded.

    Unknown or wrong charsets never fail: their bytes are read as UTF-8 with replacement.
    """
    raw = raw[:MAX_VALUE_CHARS]
    if any(ord(c) > 0x7F for c in raw):
        data = raw.encode("utf-8", "surrogateescape")
        try:
            raw = data.decode("utf-8")
        except UnicodeDecodeError:
            if stats is not None:
                stats.charset_fallbacks += 1
            raw = data.decode("latin-1")
    if "=?" not in raw:
        return _WS.sub(" ", raw).strip()
    try:
        chunks = email.header.decode_header(raw)
    except Exception:  # malformed encoded words: keep the raw text rather than nothing
        return _WS.sub(" ", raw).strip()
    parts: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            parts.append(chunk)
            continue
        parts.append(decode_bytes(chunk, charset, stats))
    # decode_header drops the whitespace between encoded and plain words unevenly.
    return _WS.sub(" ", "".join(parts)).strip()


def decode_bytes(data: bytes, charset: str | None, stats: IntakeStats | None = None) -> str:
    """Bytes in a declared charset; an unknown, wrong or non-text codec falls back to UTF-8."""
    if charset:
        try:
            return data.decode(charset, "replace")
        except Exception:  # unknown, or a codec with its own ideas (a crafted name)
            if stats is not None:
                stats.charset_fallbacks += 1
    return data.decode("utf-8", "replace")


def raw_values(message: Message, name: str) -> list[str]:
    """The raw values of every ``name`` field (case-insensitive), at most a bounded number."""
    wanted = name.lower()
    values: list[str] = []
    for key, value in message.raw_items():
        if key.lower() == wanted:
            values.append(value if isinstance(value, str) else str(value))
            if len(values) >= MAX_FIELDS_OF_A_KIND:
                break
    return values


def first_text(message: Message, name: str, stats: IntakeStats | None = None) -> str | None:
    values = raw_values(message, name)
    return text_of(values[0], stats) if values else None


def header_section_size(message: Message) -> int:
    return sum(len(k) + len(v) + 4 for k, v in message.raw_items() if isinstance(v, str))


def addresses(value: str) -> list[Address]:
    """Every address in an address-list field, with its display name where it has one."""
    value = value[:MAX_VALUE_CHARS]
    found: list[Address] = []
    try:
        pairs = email.utils.getaddresses([value.replace(";", ",")])
    except Exception:
        pairs = []
    for name, addr in pairs:
        addr = addr.strip().strip("<>")
        if "@" in addr and _ADDR_SPEC.fullmatch(addr):
            found.append(Address(addr, name.strip()))
        if len(found) >= MAX_ADDRESSES:
            return found
    if not found:
        # Header syntax getaddresses cannot follow ("Name [mailto:a@b]", junk): the specs alone.
        found = [Address(m.group(0).rstrip(".")) for m in _ADDR_SPEC.finditer(value)]
    return found[:MAX_ADDRESSES]


def address_list(values: Iterable[str], stats: IntakeStats | None = None) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for value in values:
        for address in addresses(text_of(value, stats)):
            seen.setdefault(address.address, None)
    return tuple(seen)[:MAX_ADDRESSES]


def one_address(value: str, stats: IntakeStats | None = None) -> Address | None:
    """The first address of a From-like field; a display name alone yields no address."""
    text = text_of(value, stats)
    found = addresses(text)
    if found:
        return found[0]
    return None


def parse_date(text: str | None) -> datetime | None:
    if not text:
        return None
    # Fractional seconds ("08:48:36.716", some MTAs) are not RFC 5322 and stop the parser.
    text = _FRACTION.sub(r"\1", text[:200])
    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def valid_ip(candidate: str) -> str | None:
    candidate = candidate.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket is that IPv4 client.
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


def parse_received(raw: str) -> Hop:
    """The from/by hosts, client IP, HELO, ``for`` recipient and date of one Received field."""
    text = _WS.sub(" ", raw[:4096]).strip()
    head, _, tail = text.rpartition(";")
    clauses = head if head else text
    by_at = re.search(r"\sby\s", " " + clauses, re.IGNORECASE)
    from_clause = clauses[: by_at.start()] if by_at else clauses
    from_match = _FROM.match(from_clause)
    by_match = _BY.search(clauses)
    ip: str | None = None
    for candidate in _BRACKETED.findall(from_clause):
        ip = valid_ip(candidate.rsplit(":", 1)[0] if candidate.count(":") == 1 else candidate)
        if ip:
            break
    if ip is None:
        for candidate in _IPV4.findall(from_clause):
            ip = valid_ip(candidate)
            if ip:
                break
    helo = _HELO.search(from_clause)
    for_match = _FOR.search(clauses)
    return Hop(
        from_host=from_match.group(1).strip("()[]") if from_match else None,
        by_host=by_match.group(1).strip("()[]") if by_match else None,
        ip=ip,
        helo=helo.group(1) if helo else None,
        for_address=for_match.group(1) if for_match else None,
        date=parse_date(tail.strip()) if head else None,
        raw=text[:1024],
    )


def parse_dkim(raw: str) -> DkimSignature:
    tags = {k.lower(): _WS.sub("", v) for k, v in _DKIM_TAG.findall(raw[:MAX_VALUE_CHARS])}
    return DkimSignature(domain=tags.get("d") or None, selector=tags.get("s") or None)


def parse_auth_results(raw: str) -> list[AuthResult]:
    """Method results of one Authentication-Results field (RFC 8601), comments dropped."""
    text = _WS.sub(" ", raw[:MAX_VALUE_CHARS])
    for _ in range(3):  # nested comments, bounded
        text = _COMMENT.sub(" ", text)
    results: list[AuthResult] = []
    for segment in text.split(";"):
        match = _AR_METHOD.match(segment)
        if not match:
            continue  # the authserv-id, "none", or junk
        props = tuple((k.lower(), v.strip('"')) for k, v in _AR_PROP.findall(match.group(3)))
        results.append(AuthResult(match.group(1).lower(), match.group(2).lower(), props[:20]))
    return results


def bounded_texts(
    values: Sequence[str], stats: IntakeStats | None, limit: int = 20
) -> tuple[str, ...]:
    return tuple(text_of(v, stats)[:4096] for v in values[:limit])


def message_id(message: Message, stats: IntakeStats | None = None) -> str | None:
    value = first_text(message, "Message-ID", stats)
    return value[:998] if value else None


def original_from_headers(
    message: Message, completeness: str, stats: IntakeStats | None = None
) -> OriginalMessage:
    """Everything the intake reports about a message, read from its header section."""
    return_path = None
    rp_values = raw_values(message, "Return-Path")
    if rp_values:
        text = text_of(rp_values[0], stats)
        found = addresses(text)
        return_path = found[0].address if found else ("" if "<>" in text else None)
    sender_values = raw_values(message, "From")
    date_text = first_text(message, "Date", stats)
    subject = first_text(message, "Subject", stats)
    auth = raw_values(message, "Authentication-Results")
    lu = first_text(message, "List-Unsubscribe", stats)
    return OriginalMessage(
        completeness="full" if completeness == "full" else "headers",
        return_path=return_path,
        sender=one_address(sender_values[0], stats) if sender_values else None,
        to=address_list(raw_values(message, "To"), stats),
        cc=address_list(raw_values(message, "Cc"), stats),
        delivered_to=address_list(raw_values(message, "Delivered-To"), stats),
        x_original_to=address_list(raw_values(message, "X-Original-To"), stats),
        date=parse_date(date_text),
        date_text=date_text,
        message_id=message_id(message, stats),
        subject=subject,
        received=tuple(parse_received(v) for v in raw_values(message, "Received")[:50]),
        authentication_results=bounded_texts(auth, stats),
        auth_results=tuple(r for v in auth[:20] for r in parse_auth_results(v)),
        received_spf=bounded_texts(raw_values(message, "Received-SPF"), stats),
        dkim=tuple(parse_dkim(v) for v in raw_values(message, "DKIM-Signature")[:20]),
        list_unsubscribe=lu[:2048] if lu else None,
    )


def display_sender(message: Message, stats: IntakeStats | None = None) -> Address | None:
    """The From of a message with its decoded display name (what ``one_address`` keeps)."""
    values = raw_values(message, "From")
    return one_address(values[0], stats) if values else None


__all__ = [
    "MAX_VALUE_CHARS",
    "address_list",
    "addresses",
    "bounded_texts",
    "decode_bytes",
    "display_sender",
    "first_text",
    "header_section_size",
    "message_id",
    "one_address",
    "original_from_headers",
    "parse_auth_results",
    "parse_date",
    "parse_dkim",
    "parse_received",
    "raw_values",
    "text_of",
    "valid_ip",
]
