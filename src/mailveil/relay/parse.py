"""Reading a message off the wire into ``email`` objects, within limits, or a specific refusal.

Limits are checked on the raw bytes before parsing where they can be (the stdlib parser is
recursive, builds every header and is quadratic on some shapes: ``prescan``), and on the
parsed tree for what needs structure.
"""

from __future__ import annotations

import email.errors
import email.policy
import re
from collections.abc import Iterator
from email.message import EmailMessage, Message
from email.parser import BytesParser

from mailveil.relay.errors import (
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

_HEADER_END = re.compile(rb"\r?\n\r?\n")
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
    if any(byte >= 0x80 for byte in section):
        try:
            section.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HeaderNotUtf8(f"non-UTF-8 byte at offset {exc.start} of the header") from exc


def parse_message(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> EmailMessage:
    """Parse ``raw`` (as received, CRLF or LF) or raise the ``RelayRefusal`` that names why not."""
    if len(raw) > limits.max_message_bytes:
        raise MessageTooBig(f"message of {len(raw)} bytes")
    end = _HEADER_END.search(raw)
    _check_header_section(raw[: end.start()] if end else raw, limits)
    containers = len(_CONTAINER.findall(raw))
    if containers > limits.max_parts:
        raise TooManyParts(f"{containers} multipart or message parts")
    scan(raw, limits)  # parameters, encoded-words, Received, nesting: before the parser
    try:
        message = BytesParser(policy=email.policy.default).parsebytes(raw)
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
        if depth:
            for _name, value in part.raw_items():
                if isinstance(value, str):
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
    "Limits",
    "check_structure",
    "header_text",
    "parse_message",
    "walk_with_depth",
]
