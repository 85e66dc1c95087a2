"""Reading a message off the wire into ``email`` objects, within limits, or a specific refusal.

Limits are checked on the raw bytes before parsing where they can be (the stdlib parser is
recursive, builds every header and is quadratic on some shapes: ``prescan``), and on the
parsed tree for what needs structure.
"""

from __future__ import annotations

import email.errors
import email.policy
import functools
import re
from collections.abc import Iterator
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from mailveil.relay.errors import (
    HeaderInjection,
    HeaderLineTooLong,
    HeaderNotUtf8,
    HeaderSectionTooBig,
    MalformedMessage,
    MessageTooBig,
    MimeTooDeep,
    TooManyHeaders,
    TooManyParts,
)
from mailveil.relay.prescan import DEFAULT_LIMITS, Limits, scan

# Defects that leave the MIME structure ambiguous: two readers could see different parts, so
# redaction on our reading proves nothing about the recipient's.
_STRUCTURAL_DEFECTS: tuple[type[email.errors.MessageDefect], ...] = (
    email.errors.NoBoundaryInMultipartDefect,
    email.errors.StartBoundaryNotFoundDefect,
    email.errors.MultipartInvariantViolationDefect,
    email.errors.FirstHeaderLineIsContinuationDefect,
    email.errors.MissingHeaderBodySeparatorDefect,
)


class CachedHeaders(HeaderRegistry):
    """The stdlib's header registry, without its two costs per header read.

    ``email.policy.default`` parses a header field again on every read (the relay reads a
    part's Content-Type a dozen times: its type, parameters, charset...) and its registry makes
    a new class for every header it parses. Parsed header objects are immutable (a ``str`` with
    read-only attributes; folding builds a new tree), so one parse per field value is enough:
    the same ``(name, value)`` gives the same object, from a bounded cache (values longer than
    ``MAX_CACHED_CHARS`` are parsed each time, so a hostile message cannot fill it with large
    ones). The class per header name is made once."""

    MAX_CACHED_CHARS = 512
    CACHE_ENTRIES = 4096

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}
        self._cached = functools.lru_cache(maxsize=self.CACHE_ENTRIES)(self._parse)

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls

    def _parse(self, name: str, value: Any) -> BaseHeader:
        header: BaseHeader = self[name](name, value)
        return header

    def __call__(self, name: str, value: Any) -> BaseHeader:
        # Only plain text is a cache key (an Address or a list given to __setitem__ is not).
        if type(value) is not str or len(value) > self.MAX_CACHED_CHARS:
            return self._parse(name, value)
        header: BaseHeader = self._cached(name, value)
        return header


_HEADERS = CachedHeaders()
# ``email.policy.default`` and ``email.policy.SMTP`` (for output) with the cached registry.
POLICY = email.policy.default.clone(header_factory=_HEADERS)
SMTP_POLICY = email.policy.SMTP.clone(header_factory=_HEADERS)

_HEADER_END = re.compile(rb"\r?\n\r?\n")
# ASCII characters Python's str.splitlines() ends a line at besides CR and LF: the generator
# that writes the relay's output would break a header field there, so a field holding one
# becomes two on the way out (header injection). No legitimate field holds one. (8-bit bytes
# stay surrogate escapes once parsed, which splitlines() leaves alone.)
_LINE_BREAKERS = re.compile("[\x0b\x0c\x1c\x1d\x1e]")
_LINE = re.compile(rb"\r?\n")
_CONTAINER = re.compile(
    rb"^content-type:[ \t]*(?:\r?\n[ \t]+)*(?:multipart|message)/", re.IGNORECASE | re.MULTILINE
)


def _check_header_section(section: bytes, limits: Limits) -> None:
    if len(section) > limits.max_header_bytes:
        raise HeaderSectionTooBig(f"header section of {len(section)} bytes")
    fields = 0
    for line in _LINE.split(section):
        if len(line) > limits.max_header_line:
            raise HeaderLineTooLong(f"header line of {len(line)} characters")
        if line and line[:1] not in b" \t":
            fields += 1
    if fields > limits.max_headers:
        raise TooManyHeaders(f"{fields} header fields")
    if not section.isascii():
        try:
            section.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HeaderNotUtf8(f"non-UTF-8 byte at offset {exc.start} of the header") from exc


def parse_message(
    raw: bytes, limits: Limits = DEFAULT_LIMITS, *, scanned: bool = False
) -> EmailMessage:
    """Parse ``raw`` (as received, CRLF or LF) or raise the ``RelayRefusal`` that names why not.

    ``scanned``: the caller has already passed these very bytes through ``prescan.scan`` with
    these ``limits`` (the relay's DATA check does, before anything parses), so the scan is not
    run a second time."""
    if len(raw) > limits.max_message_bytes:
        raise MessageTooBig(f"message of {len(raw)} bytes")
    end = _HEADER_END.search(raw)
    _check_header_section(raw[: end.start()] if end else raw, limits)
    containers = len(_CONTAINER.findall(raw))
    if containers > limits.max_parts:
        raise TooManyParts(f"{containers} multipart or message parts")
    if not scanned:
        scan(raw, limits)  # parameters, encoded-words, Received, nesting: before the parser
    try:
        message = BytesParser(policy=POLICY).parsebytes(raw)
    except RecursionError as exc:
        raise MimeTooDeep("MIME nesting exhausted the parser") from exc
    except Exception as exc:
        # The stdlib parser is documented as never raising; this is the belt to that braces.
        raise MalformedMessage(f"unparseable message: {type(exc).__name__}") from exc
    check_structure(message, limits)
    return message


def walk_with_depth(message: Message) -> Iterator[tuple[Message, int]]:
    """Every part with its depth (the message is 0), iteratively: depth is attacker-chosen."""
    stack: list[tuple[Message, int]] = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        yield part, depth
        if part.is_multipart():
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend(
                    (child, depth + 1) for child in reversed(children) if isinstance(child, Message)
                )


def check_structure(message: Message, limits: Limits = DEFAULT_LIMITS) -> None:
    for parts, (part, depth) in enumerate(walk_with_depth(message), start=1):
        if parts > limits.max_parts:
            raise TooManyParts(f"more than {limits.max_parts} parts")
        if depth > limits.max_mime_depth:
            raise MimeTooDeep(f"MIME depth over {limits.max_mime_depth}")
        if len(part.keys()) > limits.max_headers:
            raise TooManyHeaders(f"{len(part.keys())} header fields in a part")
        for defect in part.defects:
            if isinstance(defect, _STRUCTURAL_DEFECTS):
                raise MalformedMessage(f"malformed MIME: {type(defect).__name__}")
        for _name, value in part.raw_items():
            if not isinstance(value, str):
                continue
            if _LINE_BREAKERS.search(value):
                raise HeaderInjection("a header field holds a character that ends a line")
            if depth:
                header_text(value)


def header_text(raw: str) -> str:
    """A raw header value as text: 8-bit bytes (kept by the parser as surrogates) read as UTF-8.

    RFC 6532 allows UTF-8 in headers; any other 8-bit header is refused, not guessed at.
    """
    try:
        return raw.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError as exc:
        raise HeaderNotUtf8("a header field holds 8-bit data that is not UTF-8") from exc


__all__ = [
    "DEFAULT_LIMITS",
    "POLICY",
    "SMTP_POLICY",
    "CachedHeaders",
    "Limits",
    "check_structure",
    "header_text",
    "parse_message",
    "walk_with_depth",
]
