"""Redaction: every real address a reader of the message could see becomes its alias.

What a reader sees is compared, not only bytes (``address_forms`` says how an address is
matched: case, sub-address tags, dots where the provider ignores them, IDNA, NFKC, invisible
characters, character references and percent-escapes):

- header fields, with RFC 2047 encoded-words decoded (also as lenient decoders read damaged
  ones) and RFC 2231 parameters (file names) collapsed;
- text parts decoded (transfer encoding, charset), and also as other decoders would read a
  malformed encoding; calendar and vCard parts with their folded lines joined;
  ``format=flowed; delsp=yes`` with its soft breaks joined; text/enriched without its markup;
- HTML as a client renders it (``render``);
- binary parts, OpenPGP keys and signatures, S/MIME signatures (``opaque``).

Text is rewritten where it is: headers are stored again, a changed text part is re-encoded whole
(quoted-printable or base64) so no trace survives in its transfer encoding, an HTML part is
serialised again from its tree. A part that cannot be rewritten is refused with a 5.7.1 reply
naming it (``errors.AddressNotHidden``): a binary part (rewriting bytes would damage it), a part
under ``multipart/signed`` or an OpenPGP armored or cleartext-signed block (it would break the
signature), and any part that still shows an address after rewriting. Parts that show no
address are left as they are, bytes and all.

Cheap tests come first: nothing is rendered or mapped unless the decoded text can show "@"
(``address_forms.AT_GATE``) and holds a form of one of the domains.
"""

from __future__ import annotations

import base64
import binascii
import email.errors
import email.header
import email.headerregistry
import email.utils
import quopri
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from email.message import Message
from email.policy import Policy

from mailveil.relay import codes
from mailveil.relay.address_forms import (
    AT_GATE,
    Matcher,
    fold_map,
    reader_view,
    replace_spans,
)
from mailveil.relay.errors import AddressNotHidden, HeaderInjection, MalformedMessage
from mailveil.relay.opaque import OPENPGP_TYPES, armored_spans, binary_shows
from mailveil.relay.parse import header_text
from mailveil.relay.render import html_shows, rewrite_html

_PARAM_HEADERS = frozenset({"content-type", "content-disposition"})
# A decoded header must not carry line breaks or NUL: that is header injection through an
# encoded-word. Other control characters are replaced (they break display, not structure).
_INJECTION = re.compile(r"[\r\n\x00]")
_CONTROLS = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")
_UNFOLD = re.compile(r"\r?\n(?=[ \t])")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
# Joined by a reader: iCalendar/vCard line folding; format=flowed soft breaks with delsp=yes
# (and the quote marks of the line that continues); text/enriched markup.
_FOLDED_LINE = re.compile(r"\r?\n[ \t]")
_FLOWED_BREAK = re.compile(r" \r?\n>* ?")
_ENRICHED_MARKUP = re.compile(r"<[A-Za-z/][^<>]{0,60}>")
_DIRECTORY_TYPES = frozenset(
    {"text/calendar", "text/vcard", "text/x-vcard", "text/directory", "application/ics"}
)
_TEXT_APPLICATIONS = frozenset({"application/json", "application/xml", "application/ics"})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")


class Redactor:
    """Finds and replaces real addresses (each by its alias) and every mailbox on hidden
    domains (each by its alias) as ``address_forms`` matches them; never a mailbox on
    ``keep_domain`` (the relay's own)."""

    def __init__(
        self,
        replacements: Mapping[str, str],
        *,
        domains: Mapping[str, str] | None = None,
        keep_domain: str | None = None,
    ) -> None:
        self.matcher = Matcher(replacements, domains, keep_domain)

    def found(self, text: str, drop: re.Pattern[str] | None = None) -> bool:
        if not self.matcher:
            return False
        if drop is not None:
            text = drop.sub("", text)  # before the gate: a fold can follow "@media"
        return AT_GATE.search(text) is not None and self.matcher.found(reader_view(text))

    def found_bytes(self, data: bytes) -> bool:
        return self.matcher.found_bytes(data)

    def _replace(self, text: str, by: str | None, drop: re.Pattern[str] | None = None) -> str:
        if not self.found(text, drop):
            return text
        spans = self.matcher.spans(fold_map(text, drop=drop))
        if by is not None:
            spans = [(start, end, by) for start, end, _alias in spans]
        return replace_spans(text, spans)

    def text(self, text: str, drop: re.Pattern[str] | None = None) -> str:
        return self._replace(text, None, drop)

    def strip(self, text: str) -> str:
        """Remove every real address (for display names, where an alias would mislead)."""
        return self._replace(text, " ")


def decode_words(raw: str) -> str:
    """A header value with its RFC 2047 encoded-words decoded (unknown charsets leniently).

    Repeated until nothing changes (at most a few rounds): an encoded-word that decodes to
    another encoded-word would otherwise reach a reader who decodes once more.
    """
    text = _UNFOLD.sub("", header_text(raw))
    for _round in range(4):
        if "=?" not in text:
            break
        decoded = _decode_words_once(text)
        if decoded == text:
            break
        text = decoded
    return text


def _decode_words_once(text: str) -> str:
    try:
        chunks = email.header.decode_header(text)
    except (email.errors.HeaderParseError, ValueError):
        return text
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        else:
            # decode_header hands back unencoded stretches as raw-unicode-escape bytes.
            out.append(decode_bytes(chunk, charset or "raw-unicode-escape"))
    return "".join(out)


def decode_bytes(data: bytes, charset: str | None) -> str:
    for candidate in (charset or "us-ascii", "utf-8"):
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    # Latin-1 reads any byte and keeps ASCII where it is, so an ASCII address is still seen.
    return data.decode("latin-1")


def clean_header_value(text: str) -> str:
    if _INJECTION.search(text):
        raise HeaderInjection("a decoded header field holds a line break or NUL")
    return _CONTROLS.sub(" ", text)


def _params(part: Message, name: str) -> list[tuple[str, str]]:
    found = part.get_params(header=name, unquote=True) or []
    out: list[tuple[str, str]] = []
    for key, value in found:
        text = email.utils.collapse_rfc2231_value(value)
        out.append((key, decode_words(text) if isinstance(text, str) else ""))
    return out


def format_params(params: list[tuple[str, str]]) -> str:
    """``main; key="value"; ...`` with RFC 2231 for non-ASCII values."""
    if not params:
        return ""
    main = params[0][0]
    pieces = [main]
    for key, value in params[1:]:
        if not _TOKEN.fullmatch(key):
            continue
        if value.isascii():
            quoted = value.replace("\\", "\\\\").replace('"', '\\"')
            pieces.append(f'{key}="{quoted}"')
        else:
            pieces.append(f"{key}*=utf-8''{urllib.parse.quote(value, safe='')}")
    return "; ".join(pieces)


def _header_views(
    part: Message, name: str, raw_text: str, redactor: Redactor
) -> tuple[str, list[str]]:
    """The decoded value to rewrite, and every reading of the field to check."""
    decoded = clean_header_value(decode_words(raw_text))
    views = [decoded, raw_text]
    if "=?" in raw_text:
        # Decoders differ on damaged encoded-words (the header registry reads some that
        # decode_header rejects): what any reader could see is what gets checked, and the
        # reading that shows the address is the one rewritten.
        lenient = _registry_view(part.policy, name, raw_text)
        if lenient is not None:
            views.append(lenient)
            if redactor.found(lenient) and not redactor.found(decoded):
                decoded = lenient
    return decoded, views


def _may_hold_params(raw_text: str) -> bool:
    # RFC 2231 (name*=) and RFC 2047 hide "@" from the raw text; otherwise the gate decides.
    return "*" in raw_text or "=?" in raw_text or AT_GATE.search(raw_text) is not None


def redact_headers(part: Message, redactor: Redactor, path: str = "", signed: bool = False) -> None:
    """Redact every header of ``part`` in place, keeping their order. ``signed``: the part is
    under a signature, so a field showing an address is refused, not rewritten."""
    items = list(part.raw_items())
    changed = False
    rebuilt: list[tuple[str, str]] = []
    for name, raw in items:
        if redactor.found(name):
            if signed:
                raise _refuse(codes.ADDRESS_IN_SIGNED_PART, part, path)
            changed = True  # An address in a field name: the field goes.
            continue
        raw_text = raw if isinstance(raw, str) else str(raw)
        decoded, views = _header_views(part, name, raw_text, redactor)
        params: list[tuple[str, str]] = []
        if name.lower() in _PARAM_HEADERS and _may_hold_params(raw_text):
            params = _params(part, name)
            views.append(" ".join(f"{k} {v}" for k, v in params))
        hit = any(redactor.found(view) for view in views)
        if hit and signed:
            raise _refuse(codes.ADDRESS_IN_SIGNED_PART, part, path)
        if not hit and header_text(raw_text) == raw_text:
            rebuilt.append((name, raw))
            continue
        changed = True
        if params:
            new = format_params([(k, redactor.text(clean_header_value(v))) for k, v in params])
        else:
            new = redactor.text(decoded)
        rebuilt.append((name, _store(part.policy, name, new)))
    if not changed:
        return
    for name in {name.lower() for name, _ in items}:
        del part[name]
    for name, value in rebuilt:
        part.set_raw(name, value)


def _registry_view(policy: Policy, name: str, raw: str) -> str | None:
    try:
        text = str(policy.header_factory(name, _UNFOLD.sub("", header_text(raw))))  # type: ignore[attr-defined]
    except Exception:
        return None
    return clean_header_value(text)


def _store(policy: Policy, name: str, value: str) -> str:
    try:
        stored: str = policy.header_store_parse(name, value)[1]
        return stored
    except Exception:
        # A value its structured header class cannot take is stored as unstructured text.
        registry = email.headerregistry.HeaderRegistry(use_default_map=False)
        return registry(name, value)


def _reencode_text(part: Message, text: str, cte: str, charset: str | None) -> None:
    given = charset  # as the part names it (lower-cased), or None
    charset = charset or "us-ascii"
    try:
        data = text.encode(charset)
    except (LookupError, UnicodeEncodeError):
        charset = "utf-8"
        data = text.encode(charset)
    data = data.replace(b"\r\n", b"\n")
    if cte == "base64":
        payload = base64.encodebytes(data).decode("ascii")
    elif data.isascii() and all(len(line) <= 998 for line in data.split(b"\n")):
        cte = "7bit"
        payload = data.decode("ascii")
    else:
        cte = "quoted-printable"
        payload = quopri.encodestring(data).decode("ascii")
    part.set_payload(payload)
    _set_cte(part, cte)
    if charset != given:  # else the part names it already: its Content-Type is left as it is
        part.set_param("charset", charset)


def _set_cte(part: Message, cte: str) -> None:
    del part["Content-Transfer-Encoding"]
    # One of our own four tokens: stored as it is written, not run through a header parser.
    part.set_raw("Content-Transfer-Encoding", cte)


def _raw_payload(part: Message) -> bytes:
    payload = part.get_payload()
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogateescape")
    return b""


_LONE_EOL = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def _other_decodings(raw: bytes, cte: str) -> list[bytes]:
    """The payload as other decoders would read it. Mail clients disagree on malformed
    quoted-printable (a soft break damaged into ``=\\r\\x00``, say); an address one of them
    would reassemble must not pass because ours did not."""
    if cte == "quoted-printable":
        # Also as it will leave: the generator turns a lone CR or LF into CRLF, which can
        # complete a soft line break that did not exist in what we decoded.
        crlf = _LONE_EOL.sub(b"\r\n", raw)
        return [quopri.decodestring(raw), binascii.a2b_qp(raw), quopri.decodestring(crlf)]
    if cte == "base64":
        letters = re.sub(rb"[^A-Za-z0-9+/]", b"", raw)
        try:
            return [base64.b64decode(letters + b"=" * (-len(letters) % 4))]
        except (binascii.Error, ValueError):
            return []
    return []


def _describe(part: Message, path: str) -> str:
    """``part 1.2 (text/html)``: its MIME part number and type, fit for a reply text."""
    ctype = part.get_content_type()
    if not _CONTENT_TYPE.fullmatch(ctype):  # no "@" in it either: the reply names no address
        ctype = "content"
    return f"part {path or '1'} ({ctype})"


def _refuse(template: codes.Reply, part: Message, path: str) -> AddressNotHidden:
    return AddressNotHidden(template, _describe(part, path))


def _text_drop(ctype: str, params: Mapping[str, str]) -> re.Pattern[str] | None:
    if ctype in _DIRECTORY_TYPES:
        return _FOLDED_LINE
    if ctype in ("text/enriched", "text/richtext"):
        return _ENRICHED_MARKUP
    if ctype == "text/plain" and params.get("format") == "flowed" and params.get("delsp") == "yes":
        return _FLOWED_BREAK
    return None


def _content_params(part: Message) -> dict[str, str]:
    """Content-Type parameters, lower-cased, read once (each read parses the field again)."""
    out: dict[str, str] = {}
    for key, value in part.get_params() or []:
        text = email.utils.collapse_rfc2231_value(value)
        out[key.lower()] = str(text or "").strip().lower()
    return out


def _is_text(ctype: str) -> bool:
    maintype, _, subtype = ctype.partition("/")
    return (
        maintype in ("text", "message")
        or ctype in _TEXT_APPLICATIONS
        or subtype.endswith(("+json", "+xml"))
    )


def _text_shows(text: str, ctype: str, drop: re.Pattern[str] | None, redactor: Redactor) -> bool:
    if ctype in _HTML_TYPES:
        return html_shows(text, redactor.matcher)
    return redactor.found(text) or (drop is not None and redactor.found(text, drop))


def _redact_text(
    part: Message, ctype: str, redactor: Redactor, path: str, signed: bool, raw: bytes, data: bytes
) -> None:
    cte = part.get("Content-Transfer-Encoding", "7bit").strip().lower()
    params = _content_params(part)
    charset = params.get("charset") or None
    text = decode_bytes(data, charset)
    drop = _text_drop(ctype, params)
    for start, end in armored_spans(text):
        # Armored keys and signatures, and cleartext-signed text: read, never rewritten.
        block = text[start:end]
        packets = block.encode("utf-8", "replace")
        if redactor.found(block) or binary_shows(packets, redactor.matcher):
            raise _refuse(codes.ADDRESS_IN_OPENPGP, part, path)
    shows = _text_shows(text, ctype, drop, redactor)
    if not (shows or redactor.found_bytes(raw) or redactor.found_bytes(data)):
        for other in _other_decodings(raw, cte):
            if redactor.found_bytes(other) or redactor.found(decode_bytes(other, charset)):
                raise MalformedMessage(
                    "a text part's transfer encoding is malformed", reply=codes.BAD_CONTENT
                )
        return
    if signed:
        raise _refuse(codes.ADDRESS_IN_SIGNED_PART, part, path)
    if ctype in _HTML_TYPES:
        new = rewrite_html(text, redactor.matcher)
    else:
        new = redactor.text(text, drop)
        if drop is not None:
            new = redactor.text(new)
    if _text_shows(new, ctype, drop, redactor):
        raise _refuse(codes.ADDRESS_NOT_HIDDEN, part, path)
    _reencode_text(part, new, cte, charset)


def redact_leaf(part: Message, redactor: Redactor, path: str = "", signed: bool = False) -> None:
    """Redact one leaf part's content (module docstring); ``path`` is its part number."""
    raw = _raw_payload(part)
    decoded = part.get_payload(decode=True)
    data = decoded if isinstance(decoded, bytes) else raw
    ctype = part.get_content_type()
    if _is_text(ctype) and ctype not in OPENPGP_TYPES:
        _redact_text(part, ctype, redactor, path, signed, raw, data)
        return
    if binary_shows(data, redactor.matcher) or redactor.found_bytes(raw):
        if ctype in OPENPGP_TYPES or b"-----BEGIN PGP " in data:
            raise _refuse(codes.ADDRESS_IN_OPENPGP, part, path)
        if signed:
            raise _refuse(codes.ADDRESS_IN_SIGNED_PART, part, path)
        raise _refuse(codes.ADDRESS_IN_BINARY_PART, part, path)


def _parts(message: Message) -> Iterator[tuple[Message, str, bool]]:
    """Every part with its MIME part number (``1.2``; the message is ``""``) and whether a
    ``multipart/signed`` covers it, iteratively (depth is attacker-chosen and was bounded by
    ``parse.check_structure``)."""
    stack: list[tuple[Message, str, bool]] = [(message, "", False)]
    while stack:
        part, path, signed = stack.pop()
        yield part, path, signed
        children = part.get_payload() if part.is_multipart() else None
        if not isinstance(children, list):
            continue
        signs = part.get_content_type() == "multipart/signed"
        for number in range(len(children), 0, -1):
            child = children[number - 1]
            if isinstance(child, Message):
                covered = signed or (signs and number == 1)
                stack.append((child, f"{path}.{number}" if path else str(number), covered))


def redact_message(message: Message, redactor: Redactor) -> None:
    """Redact headers, preambles, epilogues and leaves of every part, nested messages included;
    refuse what cannot be rewritten (module docstring)."""
    for part, path, signed in _parts(message):
        redact_headers(part, redactor, path, signed)
        if part.is_multipart():
            for attr in ("preamble", "epilogue"):
                value = getattr(part, attr)
                if isinstance(value, str) and redactor.found(value):
                    if signed:
                        raise _refuse(codes.ADDRESS_IN_SIGNED_PART, part, path)
                    setattr(part, attr, redactor.text(value))
        else:
            redact_leaf(part, redactor, path, signed)


__all__ = [
    "Redactor",
    "clean_header_value",
    "decode_bytes",
    "decode_words",
    "format_params",
    "redact_headers",
    "redact_leaf",
    "redact_message",
]
