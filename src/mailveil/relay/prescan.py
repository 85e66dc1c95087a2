"""A linear pre-scan of a message's raw bytes that bounds what the stdlib parser will do.

Python's ``email`` package is quadratic on some shapes an unauthenticated sender chooses:
a Content-Type or Content-Disposition with thousands of RFC 2231 parameters
(``name*0*=...; name*1*=...``) costs seconds per message, because every parameter is
re-parsed each time the header is read (and the relay reads Content-Type many times); the
feed parser checks every body line against every open multipart boundary, so deep nesting
costs depth x lines. Once the parser has started it cannot be stopped, so the work is
bounded here first, in one pass over the bytes, and the message refused with a named reply:

- per header field: parameters (``;name=``, RFC 2231 segments included) and encoded-words;
  per message, the parameters of every Content-Type and Content-Disposition together;
- per header section (the message's, each part's, each attached message's, each
  delivery-status block): header fields, bytes, ``Received`` fields (RFC 5321 6.3: a long
  chain is a mail loop);
- per message: parts, MIME nesting (multipart boundaries open at once), header fields and
  header bytes of all sections together.

The scan follows the structure the way the stdlib's feed parser does (a boundary is open
from its multipart's header to its close delimiter; an outer delimiter closes inner parts;
``message/*`` bodies are header sections again) so its counts are the parser's, not a guess
from the bytes. Header sections are walked line by line (they are bounded by the limits);
bodies are skipped with one regular-expression search for the next delimiter line.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.message import Message

from mailveil.relay import codes
from mailveil.relay.errors import (
    HeaderSectionTooBig,
    HeaderTooComplex,
    MalformedMessage,
    MimeTooDeep,
    RelayRefusal,
    TooManyHeaders,
    TooManyParts,
)

# A parameter starts after ";" (RFC 2045 5.1); RFC 2231 segments are parameters too.
_PARAM = re.compile(rb";\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*=")
# An encoded-word's opening (RFC 2047 2): =?charset?B? or =?charset?Q?.
_ENCODED_WORD = re.compile(rb"=\?[^?\s]{1,64}\?[bBqQ]\?")
# The stdlib's idea of a header line (email.feedparser.headerRE).
_HEADER_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")  # used with match()
# The line break that ends a header field: one not followed by a continuation line.
_FIELD_END = re.compile(rb"\n(?![ \t])")
_CTYPE = re.compile(rb"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+)")


@dataclass(frozen=True)
class Limits:
    """What one message may hold; ``parse`` checks the first four with the parsed tree too."""

    max_message_bytes: int = 25 * 1024 * 1024
    # Per header section (the message's, each part's, each attached message's).
    max_headers: int = 500
    # RFC 5322 2.1.1: a line is at most 998 characters without its CRLF.
    max_header_line: int = 998
    max_header_bytes: int = 256 * 1024
    # Multipart and message/* levels (the pre-scan counts multipart levels: the feed
    # parser's cost per body line grows with the boundaries open); it recurses too.
    max_mime_depth: int = 20
    max_parts: int = 500
    # Per header field. Real Content-Type/-Disposition fields hold a handful of parameters
    # (a long RFC 2231 file name a dozen segments); DKIM-Signature about ten tags. The stdlib
    # re-parses every parameter on each read, so this bound is what keeps the cost linear.
    max_params_per_field: int = 100
    # Every Content-Type and Content-Disposition of the message together: the relay reads
    # each about ten times, at ~0.2 ms a parameter. 50 attachments with a name, a file name,
    # a size and two dates stay well inside.
    max_total_mime_params: int = 500
    # A long CJK subject is a few dozen encoded-words.
    max_encoded_words_per_field: int = 256
    # Per header section. RFC 5321 6.3: a loop is detected by counting Received fields,
    # with a threshold of at least 100.
    max_received: int = 100
    # Every section of the message together (parts x fields would otherwise be 250,000).
    max_total_header_fields: int = 5_000
    max_total_header_bytes: int = 1024 * 1024


DEFAULT_LIMITS = Limits()


@dataclass
class Tally:
    """What the scan counted; the tests and the benchmark print it."""

    sections: int = 0
    fields: int = 0
    header_bytes: int = 0
    max_depth: int = 0
    worst_params: int = 0
    mime_params: int = 0
    worst_encoded_words: int = 0


@dataclass
class _Section:
    end: int  # where the body starts
    ctype: bytes  # lower-case type/subtype, b"" when not given
    boundary: bytes | None


def _field(
    raw: bytes, start: int, end: int, limits: Limits, tally: Tally
) -> tuple[bytes, bytes] | None:
    """Check one header field (its folded lines ``raw[start:end]``); its name and value
    when the caller needs them (Content-Type), else None."""
    text = raw[start:end]
    colon = text.find(b":")
    name = text[:colon].strip().lower() if colon >= 0 else b""
    params = len(_PARAM.findall(text))
    tally.worst_params = max(tally.worst_params, params)
    if params > limits.max_params_per_field:
        raise HeaderTooComplex(
            f"{params} parameters in one header field", reply=codes.TOO_MANY_PARAMETERS
        )
    words = len(_ENCODED_WORD.findall(text))
    tally.worst_encoded_words = max(tally.worst_encoded_words, words)
    if words > limits.max_encoded_words_per_field:
        raise HeaderTooComplex(
            f"{words} encoded-words in one header field", reply=codes.TOO_MANY_ENCODED_WORDS
        )
    if name in (b"content-type", b"content-disposition"):
        tally.mime_params += params
        if tally.mime_params > limits.max_total_mime_params:
            raise HeaderTooComplex(
                f"over {limits.max_total_mime_params} MIME parameters in all",
                reply=codes.TOO_MANY_PARAMETERS_IN_ALL,
            )
    if name == b"content-type":
        return name, text[colon + 1 :]
    return (name, b"") if name == b"received" else None


def _boundary(value: bytes) -> bytes | None:
    """The boundary of a multipart Content-Type value, read as the stdlib reads it
    (quoting, RFC 2231 forms); its parameters are already bounded by ``_field``."""
    holder = Message()
    text = value.decode("utf-8", "surrogateescape")
    holder["Content-Type"] = text.replace("\r", "").replace("\n", "")  # unfolded
    try:
        found = holder.get_boundary()
    except (UnicodeError, ValueError, LookupError) as exc:  # 8-bit junk in the field
        raise MalformedMessage(f"unreadable multipart Content-Type: {type(exc).__name__}") from exc
    if found is not None and len(found) > 200:  # RFC 2046 5.1.1: at most 70 characters
        raise MalformedMessage(f"multipart boundary of {len(found)} characters")
    return found.encode("utf-8", "surrogateescape") if found else None


@functools.lru_cache(maxsize=64)
def _delimiters(open_boundaries: tuple[bytes, ...]) -> re.Pattern[bytes]:
    """Delimiter lines of the open boundaries (RFC 2046 5.1.1; trailing white space allowed,
    as the stdlib allows it): one search skips a body at C speed, however many lines in it
    merely start with "--"."""
    names = sorted(set(open_boundaries), key=len, reverse=True)
    alternatives = b"|".join(re.escape(name) for name in names)
    return re.compile(rb"^--(" + alternatives + rb")(--)?[ \t]*\r?$", re.MULTILINE)


def _section(raw: bytes, pos: int, limits: Limits, tally: Tally) -> _Section:
    """Scan the header section starting at ``pos``, up to its blank line or first line
    that is not a header line (where the stdlib starts the body too). Field by field: each
    field's end (a line break not followed by white space) is found by one search, so a
    section costs Python work per field, not per line."""
    n = len(raw)
    fields = received = 0
    ctype, boundary = b"", None
    at = pos
    body = n
    while at < n:
        if raw.startswith((b"\r\n", b"\n"), at):
            body = at + (2 if raw[at] == 0x0D else 1)
            break
        eol = raw.find(b"\n", at)
        if _HEADER_LINE.match(raw, at, n if eol < 0 else eol) is None:
            body = at  # not a header line: the body starts here, without a blank line
            break
        found = _FIELD_END.search(raw, at)
        end = n if found is None else found.end()
        if end - pos > limits.max_header_bytes + 2:
            raise HeaderSectionTooBig(f"header section of over {limits.max_header_bytes} bytes")
        fields += 1
        if fields > limits.max_headers:
            raise TooManyHeaders(f"over {limits.max_headers} header fields in one section")
        seen = _field(raw, at, end, limits, tally)
        if seen is not None and seen[0] == b"received":
            received += 1
        elif seen is not None:
            match = _CTYPE.match(seen[1])
            ctype = match.group(1).lower() if match else b""
            boundary = _boundary(seen[1]) if ctype.startswith(b"multipart/") else None
        at = end
    size = min(body, n) - pos
    tally.sections += 1
    tally.fields += fields
    tally.header_bytes += size
    if fields > limits.max_headers:
        raise TooManyHeaders(f"{fields} header fields in one section")
    if received > limits.max_received:
        raise HeaderTooComplex(f"{received} Received fields", reply=codes.TOO_MANY_RECEIVED)
    if tally.sections > limits.max_parts:
        raise TooManyParts(f"more than {limits.max_parts} parts")
    if tally.fields > limits.max_total_header_fields:
        raise TooManyHeaders(
            f"more than {limits.max_total_header_fields} header fields in all",
            reply=codes.TOO_MANY_HEADERS_IN_ALL,
        )
    if tally.header_bytes > limits.max_total_header_bytes:
        raise HeaderSectionTooBig(
            f"more than {limits.max_total_header_bytes} header bytes in all",
            reply=codes.HEADERS_TOO_BIG_IN_ALL,
        )
    return _Section(body, ctype, boundary)


def scan(raw: bytes, limits: Limits = DEFAULT_LIMITS, *, headers_only: bool = False) -> Tally:
    """Walk ``raw``'s structure within ``limits`` or raise the ``RelayRefusal`` naming the
    limit; ``headers_only``: only the first header section (as ``parsebytes(headersonly=)``)."""
    tally = Tally()
    stack: list[bytes] = []  # open multipart boundaries, outermost first
    n = len(raw)
    pos, in_header, dsn = 0, True, False
    while pos < n:
        if in_header:
            section = _section(raw, pos, limits, tally)
            if headers_only:
                break
            moved, pos = section.end > pos, section.end
            ctype = section.ctype
            if dsn:
                in_header = moved  # the blocks end where a line is not a header line
            elif section.boundary is not None:
                stack.append(section.boundary)
                in_header = False  # the preamble, up to the first delimiter
            elif ctype.startswith(b"message/"):
                # A delivery-status body is header blocks, one after another; any other
                # message/* body is a message: a header section again. (Attached messages
                # do not add to the parser's cost per line: only open boundaries count
                # here; ``parse.check_structure`` bounds all levels once parsed.)
                dsn = ctype in (b"message/delivery-status", b"message/global-delivery-status")
            else:
                in_header = False
            if len(stack) > tally.max_depth:
                tally.max_depth = len(stack)
                if len(stack) > limits.max_mime_depth:
                    raise MimeTooDeep(f"MIME nesting over {limits.max_mime_depth}")
            continue
        if not stack:
            break  # a body outside any multipart: nothing further is parsed as structure
        match = _delimiters(tuple(stack)).search(raw, pos)
        if match is None:
            break
        eol = raw.find(b"\n", match.end())
        pos = n if eol < 0 else eol + 1
        rest, closing = match.group(1), match.group(2) is not None
        dsn = False
        while stack and stack[-1] != rest:
            stack.pop()  # an outer delimiter ends every part opened inside it
        if closing:
            stack.pop()
        else:
            in_header = True
    return tally


def refusal_for(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> codes.Reply | None:
    """The named reply for a message over a limit, or None when it is within them all."""
    try:
        scan(raw, limits)
    except RelayRefusal as exc:
        return exc.reply
    return None


__all__ = ["DEFAULT_LIMITS", "Limits", "Tally", "refusal_for", "scan"]
