"""The judge of the privacy tests: does a delivered message show an address to a reader?

Written apart from ``mailveil.relay.address_forms`` (only the standard library, Unicode data
and an HTML parser), so a mistake in the relay's matching is not repeated here. A message
"shows" an address when any view of it holds a canonical form of it after folding (NFKC, case,
Default_Ignorable characters removed, ideographic full stops as dots): with any ``+tag``, with
any dots in the local part for Gmail, with the domain as IDNA or Unicode. The views: the raw
bytes; every header decoded (RFC 2047) and its parameters (RFC 2231); preambles and epilogues;
every leaf decoded (transfer encoding, charset); calendar and vCard text unfolded; for HTML the
text of all nodes joined, the text of what is not hidden joined (two parsers: Lexbor and the
standard library's), every attribute value percent-decoded, and the source with references
decoded; OpenPGP armor de-armored.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.header
import email.policy
import email.utils
import html
import html.parser
import re
import sys
import unicodedata
import urllib.parse
from email.message import Message

from selectolax.lexbor import LexborHTMLParser

GMAIL = ("gmail.com", "googlemail.com")
_INVISIBLE = {
    c: None
    for c in range(sys.maxunicode + 1)
    if unicodedata.category(chr(c)) == "Cf" or 0xFE00 <= c <= 0xFE0F or c in (0x034F, 0x115F)
}
_HIDDEN_CSS = ("[hidden]", '[style*="none"]', '[style*="font-size:0"]', '[style*="font-size: 0"]')


def fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text.translate(_INVISIBLE)).casefold()
    return unicodedata.normalize("NFKC", text).translate(_INVISIBLE).replace("\u3002", ".")


def canonical_pattern(address: str) -> re.Pattern[str]:
    """Every canonical form of ``address`` (module docstring), on folded text."""
    local, _, domain = fold(address).rpartition("@")
    local = local.split("+", 1)[0]
    domain = domain.rstrip(".")
    ace = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    unicode_form = ace.encode("ascii").decode("idna")
    domains = {domain, ace, fold(unicode_form)}
    if domains & set(GMAIL):
        domains |= set(GMAIL)
        local_re = r"\.*".join(re.escape(c) for c in local.replace(".", ""))
    else:
        local_re = re.escape(local)
    hosts = "|".join(re.escape(d) for d in sorted(domains, key=len, reverse=True))
    return re.compile(rf"{local_re}(?:\+[^\s@]*)?\"?@(?:{hosts})")


class _TextCollector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self.attributes: list[str] = []

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes += [tag] + [f"{k}={v or ''}" for k, v in attrs]


def _html_views(source: str) -> list[str]:
    views = [html.unescape(source), urllib.parse.unquote(html.unescape(source))]
    tree = LexborHTMLParser(source)
    if tree.root is not None:
        views.append(tree.root.text(separator=""))
        for node in tree.root.traverse():
            views += [urllib.parse.unquote(v or "") for v in node.attributes.values()]
        sheets = " ".join(node.text() for node in tree.css("style"))
        rules = re.findall(r"([^{}]+)\{[^{}]*(?:display:\s*none|font-size:\s*0)[^{}]*\}", sheets)
        for selector in (*rules, "head", "style", "script", "template", *_HIDDEN_CSS):
            for node in tree.css(selector):
                node.decompose()
        views.append(tree.root.text(separator=""))
    collector = _TextCollector()
    collector.feed(source)
    collector.close()
    views += ["".join(collector.texts), *collector.attributes]
    return views


def _dearmor(text: str) -> list[str]:
    out = []
    for block in re.findall(r"-----BEGIN PGP [A-Z ]+-----\r?\n(.*?)-----END", text, re.DOTALL):
        body = block.split("\n\n", 1)[-1] if ":" in block.split("\n\n", 1)[0] else block
        letters = "".join(line for line in body.split() if not line.startswith("="))
        try:
            out.append(base64.b64decode(letters + "=" * (-len(letters) % 4)).decode("latin-1"))
        except (binascii.Error, ValueError):
            continue
    return out


def _part_views(part: Message) -> list[str]:
    views: list[str] = []
    for name, raw in part.raw_items():
        views.append(name)
        try:
            views.append(str(email.header.make_header(email.header.decode_header(str(raw)))))
        except (LookupError, ValueError, email.errors.HeaderParseError):
            views.append(str(raw))
    for header in ("content-type", "content-disposition"):
        for key, value in part.get_params(header=header) or []:
            views.append(f"{key}={email.utils.collapse_rfc2231_value(value)}")
    for extra in (part.preamble, part.epilogue):
        if isinstance(extra, str):
            views.append(extra)
    if part.is_multipart():
        return views
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return views
    try:
        text = payload.decode(part.get_content_charset() or "utf-8", "replace")
    except LookupError:
        text = payload.decode("latin-1")
    views += [text, payload.decode("latin-1"), re.sub(r"\r?\n[ \t]", "", text)]
    views += [urllib.parse.unquote(text), html.unescape(text)]
    if part.get_content_type() == "text/html":
        views += _html_views(text)
    views += _dearmor(payload.decode("latin-1"))
    return views


def text_shows(text: str, address: str, *, is_html: bool) -> bool:
    """Whether one decoded text (an HTML source when ``is_html``) shows ``address``."""
    pattern = canonical_pattern(address)
    views = [text, urllib.parse.unquote(text), html.unescape(text)]
    views += _html_views(text) if is_html else []
    return any(pattern.search(fold(view)) for view in views)


def shown(data: bytes, address: str) -> list[str]:
    """Which views of the message ``data`` show ``address`` (empty: none)."""
    pattern = canonical_pattern(address)
    message = email.message_from_bytes(data, policy=email.policy.default)
    views = {"raw bytes": [data.decode("latin-1")]}
    for number, part in enumerate(message.walk()):
        views[f"part {number} ({part.get_content_type()})"] = _part_views(part)
    return [name for name, texts in views.items() if any(pattern.search(fold(t)) for t in texts)]


__all__ = ["canonical_pattern", "fold", "shown", "text_shows"]
