"""Redaction: every occurrence of a real address in a message becomes its alias.

Matching is done on decoded text (encoded-words, RFC 2231 parameters, quoted-printable with its
soft line breaks, base64, the part's charset), so an address is found however the sender's
client chose to encode it; and on the raw bytes too, so an address hidden from a decoder (for
example plain text inside a "base64" part, which a lenient decoder skips) is still caught. Each
character of the address may also appear percent-encoded (URLs, ``mailto:``) or as an HTML
character reference (``&#64;``, ``&#x40;``, ``&commat;``), in any case, mixed freely.

A changed part is re-encoded whole (quoted-printable or base64), so no trace of the address
survives in its transfer encoding. Binary attachments are redacted byte for byte; an address
inside compressed content (a zip, a PDF stream) cannot be seen here: attachment policy is the
guard for those.
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
from collections.abc import Mapping
from email.message import Message
from email.policy import Policy

from mailveil.relay import codes
from mailveil.relay.errors import HeaderInjection, MalformedMessage
from mailveil.relay.parse import header_text, walk_with_depth

_NAMED_ENTITIES: dict[str, tuple[str, ...]] = {
    "@": ("&commat;",),
    ".": ("&period;",),
    "-": ("&hyphen;", "&dash;"),
    "_": ("&lowbar;", "&UnderBar;"),
    "+": ("&plus;",),
}
_PARAM_HEADERS = frozenset({"content-type", "content-disposition"})
# A decoded header must not carry line breaks or NUL: that is header injection through an
# encoded-word. Other control characters are replaced (they break display, not structure).
_INJECTION = re.compile(r"[\r\n\x00]")
_CONTROLS = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")
_UNFOLD = re.compile(r"\r?\n(?=[ \t])")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def _char_pattern(char: str) -> str:
    forms = [re.escape(char)]
    forms += [re.escape(form) for form in _NAMED_ENTITIES.get(char, ())]
    forms.append("".join(f"%{byte:02x}" for byte in char.encode("utf-8")))
    forms.append(f"&#0*{ord(char)};?")
    forms.append(f"&#x0*{ord(char):x};?")
    return "(?:" + "|".join(forms) + ")"


class Redactor:
    """Replaces each real address (in any encoding the module docstring lists) by its alias."""

    def __init__(self, replacements: Mapping[str, str]) -> None:
        # Longest first, so an address that contains another is replaced whole.
        ordered = sorted(
            ((real, alias) for real, alias in replacements.items() if real),
            key=lambda pair: -len(pair[0]),
        )
        self._text = [
            (re.compile("".join(_char_pattern(c) for c in real), re.IGNORECASE), alias)
            for real, alias in ordered
        ]
        self._bytes = [
            (re.compile(pattern.pattern.encode("utf-8"), re.IGNORECASE), alias.encode("utf-8"))
            for pattern, alias in self._text
        ]

    def found(self, text: str) -> bool:
        return any(pattern.search(text) for pattern, _ in self._text)

    def found_bytes(self, data: bytes) -> bool:
        return any(pattern.search(data) for pattern, _ in self._bytes)

    def text(self, text: str) -> str:
        for pattern, alias in self._text:
            # A template would read backslashes in the alias; escaping makes it literal.
            text = pattern.sub(alias.replace("\\", "\\\\"), text)
        return text

    def strip(self, text: str) -> str:
        """Remove every real address (for display names, where an alias would mislead)."""
        for pattern, _alias in self._text:
            text = pattern.sub(" ", text)
        return text

    def bytes(self, data: bytes) -> bytes:
        for pattern, alias in self._bytes:
            data = pattern.sub(alias.replace(b"\\", b"\\\\"), data)
        return data


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


def redact_headers(part: Message, redactor: Redactor) -> None:
    """Redact every header of ``part`` in place, keeping their order."""
    items = list(part.raw_items())
    changed = False
    rebuilt: list[tuple[str, str]] = []
    for name, raw in items:
        if redactor.found(name):
            changed = True  # An address in a field name: the field goes.
            continue
        raw_text = raw if isinstance(raw, str) else str(raw)
        decoded = clean_header_value(decode_words(raw_text))
        # Decoders differ on damaged encoded-words (the header registry reads some that
        # decode_header rejects): what any reader could see is what gets checked.
        lenient = _registry_view(part.policy, name, raw_text)
        if lenient is not None and redactor.found(lenient):
            decoded = lenient
        params: list[tuple[str, str]] = []
        if name.lower() in _PARAM_HEADERS:
            params = _params(part, name)
            decoded_params = " ".join(f"{k} {v}" for k, v in params)
        else:
            decoded_params = ""
        if not (
            redactor.found(decoded)
            or redactor.found(decoded_params)
            or redactor.found(raw_text)
            or header_text(raw_text) != raw_text
        ):
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


def _reencode_text(part: Message, text: str, cte: str) -> None:
    charset = part.get_content_charset() or "us-ascii"
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
    part.set_param("charset", charset)


def _set_cte(part: Message, cte: str) -> None:
    del part["Content-Transfer-Encoding"]
    part["Content-Transfer-Encoding"] = cte


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


def redact_leaf(part: Message, redactor: Redactor) -> None:
    raw = _raw_payload(part)
    decoded = part.get_payload(decode=True)
    data = decoded if isinstance(decoded, bytes) else raw
    cte = part.get("Content-Transfer-Encoding", "7bit").strip().lower()
    if part.get_content_maintype() == "text":
        text = decode_bytes(data, part.get_content_charset())
        if redactor.found(text) or redactor.found_bytes(raw) or redactor.found_bytes(data):
            _reencode_text(part, redactor.text(text), cte)
            return
        for other in _other_decodings(raw, cte):
            if redactor.found_bytes(other) or redactor.found(
                decode_bytes(other, part.get_content_charset())
            ):
                raise MalformedMessage(
                    "a text part's transfer encoding is malformed", reply=codes.BAD_CONTENT
                )
        return
    if redactor.found_bytes(raw) or redactor.found_bytes(data):
        part.set_payload(base64.encodebytes(redactor.bytes(data)).decode("ascii"))
        _set_cte(part, "base64")


def redact_message(message: Message, redactor: Redactor) -> None:
    """Redact headers, preambles, epilogues and leaves of every part, nested messages included.

    Depth and part count were bounded by ``parse.check_structure``.
    """
    for part, _depth in walk_with_depth(message):
        redact_headers(part, redactor)
        if part.is_multipart():
            for attr in ("preamble", "epilogue"):
                value = getattr(part, attr)
                if isinstance(value, str) and redactor.found(value):
                    setattr(part, attr, redactor.text(value))
        else:
            redact_leaf(part, redactor)


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
