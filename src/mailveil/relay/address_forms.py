"""The canonical forms of an email address, and finding them in text as a reader would see it.

A reader who sees ``Ada.Lovelace+news@Example.NET``, ``ada.lovelace＠example.net`` or
``adalovelace@googlemail.com`` (for a Gmail user) can write to the same mailbox, so each is the
address. Text is compared after ``fold``: Default_Ignorable code points (zero-width space and
joiners, word joiner, soft hyphen, bidi controls, variation selectors, tag characters) removed,
Unicode NFKC (fullwidth ``＠``, mathematical letters, ``。``), then case folding. An address is
matched by:

- its local part in any case; a sub-address tag after ``+`` (RFC 5233, honoured by Gmail,
  Outlook, iCloud, Fastmail, Proton, Postfix's default ``recipient_delimiter``) is ignored, in
  the real address and in the text. ``-`` is not treated as a separator: providers that use it
  do so by their own configuration, and treating it so everywhere would swallow other people's
  addresses (``ada-smith@`` for ``ada@``).
- for providers that ignore dots in the local part (``DOT_INSENSITIVE``: gmail.com and
  googlemail.com, which are also one another's equivalents), any dots anywhere in it;
- its domain as written, in IDNA (``xn--``) form and in Unicode form (UTS 46 mapping).

There is no boundary on either side: ``xyzada@example.net`` holds ``ada@example.net`` and is
rewritten whole (``Matcher.spans`` grows a match over the rest of the mailbox), so a reader
never has to be trusted not to drop a prefix.

``Folded`` keeps, for text that must be rewritten, where each folded character came from, so a
match on the folded text replaces exactly the source characters (entities, percent escapes,
soft hyphens and folds included) that made it.
"""

from __future__ import annotations

import bisect
import functools
import html
import re
import unicodedata
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import AnyStr

import idna

# Providers whose mailboxes ignore dots in the local part, and domains that are one mailbox.
DOT_INSENSITIVE = frozenset({"gmail.com", "googlemail.com"})
DOMAIN_EQUIVALENTS: Mapping[str, frozenset[str]] = {
    "gmail.com": frozenset({"googlemail.com"}),
    "googlemail.com": frozenset({"gmail.com"}),
}
SUBADDRESS_SEPARATOR = "+"

# Unicode Default_Ignorable_Code_Point (DerivedCoreProperties.txt): drawn as nothing.
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_IGNORABLE = re.compile("[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _IGNORABLE_RANGES) + "]")
# Every way text can come to show "@" to a reader after ``fold`` and ``decode_refs``: the code
# points whose NFKC holds it (U+0040, U+FE6B, U+FF20), a numeric character reference to one of
# them, the named one, and percent-escapes of their UTF-8. No match here means no address can
# be shown: the cheap test that comes before any rendering (tests check it against generated
# disguises). A CSS at-rule keyword followed by a space, "(", ";" or a quote (``@media (``,
# ``@import url``) shows no address (a domain has a dot and no space) and does not count:
# nearly every HTML mail has one.
_AT_CHARS = "@\ufe6b\uff20"
_CSS_AT_RULE = (
    r"(?:media|import|font-face|charset|keyframes|supports|page|namespace|layer|container"
    r"|property|counter-style|font-feature-values|viewport|document|-[a-z]+-[a-z-]+)"
    r"[ \t\r\n({;'\"]"
)
AT_GATE = re.compile(
    "|".join(
        [
            f"[{_AT_CHARS}](?!{_CSS_AT_RULE})",
            "&#0*(?:" + "|".join(str(ord(c)) for c in _AT_CHARS) + ")(?![0-9])",
            "&#x0*(?:" + "|".join(f"{ord(c):x}" for c in _AT_CHARS) + ")(?![0-9a-f])",
            "&commat",
        ]
        + ["".join(f"%{b:02x}" for b in c.encode()) for c in _AT_CHARS]
    ),
    re.IGNORECASE,
)
AT_GATE_BYTES = re.compile(
    b"|".join([b"@", b"&#", b"(?i:&commat)", b"(?i:%40)"] + [c.encode() for c in _AT_CHARS[1:]])
)

# Two alternatives each opening with a literal: the regex engine then skips ahead to a "%" or
# "&" instead of trying every position.
_REFS = re.compile(
    r"%[0-9A-Fa-f]{2}(?:%[0-9A-Fa-f]{2})*"
    r"|&(?:#[0-9]{1,8};?|#[xX][0-9A-Fa-f]{1,7};?|[A-Za-z][A-Za-z0-9]{1,31};?)"
)
_WIDE = re.compile(r"[^\x00-\x7f]")
# A match grows over the rest of its mailbox: local-part characters before, host after.
_LOCAL_CHAR = re.compile(r"[\w.!#$%&'*+/=?^`{|}~\"-]")
_HOST_CHAR = re.compile(r"[\w-]")


def fold(text: str) -> str:
    """``text`` as it is compared: ignorables gone, NFKC, case folded."""
    if text.isascii():
        return text.lower()
    text = unicodedata.normalize("NFKC", _IGNORABLE.sub("", text)).casefold()
    if not unicodedata.is_normalized("NFKC", text):
        # Case folding can leave text that is not NFKC (and NFKC can make an ignorable).
        text = _IGNORABLE.sub("", unicodedata.normalize("NFKC", text))
    # UTS 46 maps the ideographic full stop to "." in domains; NFKC does not.
    return text.replace("\u3002", ".")


@functools.lru_cache(maxsize=4096)  # mail repeats its references (%20, &nbsp;, &#8217;)
def _decode_ref(token: str, entities: bool, percent: bool) -> str:
    if token.startswith("%"):
        return urllib.parse.unquote(token, errors="replace") if percent else token
    if not entities:
        return token
    if token.startswith("&#"):
        # The common numeric case without html.unescape's general machinery.
        digits = token[2:].rstrip(";")
        try:
            code = int(digits[1:], 16) if digits[:1] in ("x", "X") else int(digits)
        except ValueError:
            return token
        if 0 < code < 0x80 or 0xA0 <= code < 0xD800 or 0xE000 <= code <= 0x10FFFF:
            return chr(code)
        return html.unescape(token)  # NUL, surrogates, the windows-1252 remaps of 0x80-0x9F
    return html.unescape(token)


def decode_refs(text: str, *, entities: bool = True, percent: bool = True) -> str:
    """Character references and percent-escapes read, once, as a browser or a URL would."""
    if not ((entities and "&" in text) or (percent and "%" in text)):
        return text
    return _REFS.sub(lambda m: _decode_ref(m.group(), entities, percent), text)


def reader_view(
    text: str, *, entities: bool = True, percent: bool = True, drop: re.Pattern[str] | None = None
) -> str:
    """What is compared for ``text``: ``drop`` removed (line folds, soft breaks, markup),
    references decoded, folded."""
    if drop is not None:
        text = drop.sub("", text)
    return fold(decode_refs(text, entities=entities, percent=percent))


@functools.lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    return fold(char)


@dataclass(frozen=True)
class Folded:
    """A folded text and, per segment, the source span it came from. Exact segments map one
    source character to one folded character; others (a reference, a non-ASCII character, a
    dropped fold) map as a whole."""

    source: str
    text: str
    starts: list[int]  # folded start of each segment
    spans: list[tuple[int, int]]  # its source span
    exact: list[bool]

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        i = bisect.bisect_right(self.starts, start) - 1
        j = bisect.bisect_right(self.starts, end - 1) - 1
        s0 = self.spans[i][0]
        begin = s0 + (start - self.starts[i]) if self.exact[i] else s0
        t0, t1 = self.spans[j]
        finish = t0 + (end - self.starts[j]) if self.exact[j] else t1
        return begin, max(begin, finish)


def fold_map(
    text: str, *, entities: bool = True, percent: bool = True, drop: re.Pattern[str] | None = None
) -> Folded:
    """``text`` folded with the map back to its source (for rewriting; slower than fold)."""
    parts: list[str] = []
    starts: list[int] = []
    spans: list[tuple[int, int]] = []
    exact: list[bool] = []
    length = 0

    def add(folded: str, span: tuple[int, int], is_exact: bool) -> None:
        nonlocal length
        parts.append(folded)
        starts.append(length)
        spans.append(span)
        exact.append(is_exact)
        length += len(folded)

    specials = [_WIDE]
    if drop is not None:
        specials.append(drop)
    if entities or percent:
        specials.append(_REFS)
    pattern = re.compile("|".join(f"(?:{p.pattern})" for p in specials), re.IGNORECASE)
    at = 0
    for match in pattern.finditer(text):
        if match.start() > at:
            add(text[at : match.start()].lower(), (at, match.start()), True)
        token = match.group()
        if drop is not None and drop.fullmatch(token):
            folded = ""
        elif len(token) == 1:
            folded = _fold_char(token)
        else:
            folded = fold(_decode_ref(token, entities, percent))
        add(folded, match.span(), False)
        at = match.end()
    if at < len(text) or not parts:
        add(text[at:].lower(), (at, len(text)), True)
    return Folded(text, "".join(parts), starts, spans, exact)


@functools.lru_cache(maxsize=1024)  # pure, and asked for every message's addresses
def domain_forms(domain: str) -> frozenset[str]:
    """The folded forms of ``domain``: as given, IDNA (ACE) and Unicode, and its equivalents."""
    base = fold(domain).strip().rstrip(".")
    forms = {base}
    try:
        ace = idna.encode(base, uts46=True).decode("ascii")
        forms |= {ace, fold(idna.decode(ace))}
    except (idna.IDNAError, UnicodeError, ValueError):
        pass  # Not a valid IDN (an underscore, an empty label): matched as written.
    for form in list(forms):
        forms |= DOMAIN_EQUIVALENTS.get(form, frozenset())
    return frozenset(f for f in forms if f)


@functools.lru_cache(maxsize=1024)
def mailbox_key(address: str) -> str:
    """One string per mailbox: folded, tag removed, dots removed where the provider ignores
    them, domain in IDNA form. Two addresses with one key reach the same mailbox."""
    local, _, domain = address.strip().rpartition("@")
    local = fold(local).strip('"')
    if SUBADDRESS_SEPARATOR in local[1:]:
        local = local[: local.index(SUBADDRESS_SEPARATOR, 1)]
    forms = domain_forms(domain)
    if forms & DOT_INSENSITIVE:
        local = local.replace(".", "")
    ace = min(forms, key=lambda form: (not form.isascii(), form))
    return f"{local}@{ace}"


def _alternatives(forms: Iterable[str]) -> str:
    return "(?:" + "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)) + ")"


@functools.lru_cache(maxsize=1024)
def _address_pattern(address: str) -> tuple[str, frozenset[str]] | None:
    local, _, domain = address.strip().rpartition("@")
    if not local or not domain:
        return None
    key_local = mailbox_key(address).rpartition("@")[0]
    forms = domain_forms(domain)
    if forms & DOT_INSENSITIVE:
        local_re = r"\.*" + r"\.*".join(re.escape(c) for c in key_local) + r"\.*"
    else:
        local_re = re.escape(key_local)
    # Bounded (a local part is at most 64 octets): "ada+ada+ada+..." must not go quadratic.
    tag = rf"(?:{re.escape(SUBADDRESS_SEPARATOR)}[^\s@<>()\[\]\\,;:\"]{{0,64}})?"
    return f'{local_re}{tag}"?@{_alternatives(forms)}', forms


@functools.lru_cache(maxsize=256)
def _domain_pattern(domain: str) -> tuple[str, frozenset[str]]:
    forms = domain_forms(domain)
    return rf'(?<=[\w.!#$%&\'*+/=?^`{{|}}~-])"?@(?:[\w-]+\.)*{_alternatives(forms)}', forms


class Matcher:
    """Finds the canonical forms of some addresses (each to its alias), and every mailbox on
    some domains (each to its alias), in folded text. Mailboxes on ``keep_domain`` (the relay's
    own) are never matched."""

    def __init__(
        self,
        addresses: Mapping[str, str],
        domains: Mapping[str, str] | None = None,
        keep_domain: str | None = None,
    ) -> None:
        rules: list[tuple[str, str]] = []
        needles: set[str] = set()
        for real, alias in addresses.items():
            built = _address_pattern(real) if real else None
            if built is not None:
                rules.append((built[0], alias))
                needles |= built[1]
        for domain, alias in (domains or {}).items():
            if domain.strip(". "):
                pattern, forms = _domain_pattern(domain)
                rules.append((pattern, alias))
                needles |= forms
        self.aliases = [alias for _, alias in rules]
        self.needles = tuple(sorted(needles))
        self._keep = fold(keep_domain).strip(".") if keep_domain else ""
        joined = "|".join(f"(?P<r{i}>{pattern})" for i, (pattern, _) in enumerate(rules))
        self._text = re.compile(joined) if rules else None
        self._bytes = re.compile(joined.encode("utf-8")) if rules else None
        self._needles_bytes = tuple(n.encode("utf-8") for n in self.needles)

    def __bool__(self) -> bool:
        return self._text is not None

    def _kept(self, found: str) -> bool:
        host = found.rpartition("@")[2]
        return bool(self._keep) and (host == self._keep or host.endswith("." + self._keep))

    def matches(self, folded: str) -> Iterator[tuple[int, int, str]]:
        """(start, end, alias) of each match in ``folded`` (already ``fold``-ed)."""
        if self._text is None:
            return
        for low, high in _windows(folded, self.needles):
            for match in self._text.finditer(folded, low, high):
                if not self._kept(match.group()):
                    yield match.start(), match.end(), self.aliases[int(str(match.lastgroup)[1:])]

    def found(self, folded: str) -> bool:
        return next(self.matches(folded), None) is not None

    def found_bytes(self, data: bytes, *, wide: bool = False) -> bool:
        """An ASCII or UTF-8 form in ``data``; with ``wide``, also as UTF-16 (every other
        byte)."""
        if self._bytes is None or b"@" not in data:
            return False
        for view in (data, data[::2], data[1::2]) if wide else (data,):
            lowered = view.lower()
            for low, high in _windows(lowered, self._needles_bytes):
                for match in self._bytes.finditer(lowered, low, high):
                    if not self._kept(match.group().decode("utf-8", "replace")):
                        return True
        return False

    def spans(self, folded: Folded, barriers: Iterable[int] = ()) -> list[tuple[int, int, str]]:
        """Source spans to replace in ``folded.source``, each grown over the rest of its mailbox
        (never across a ``barriers`` position: the edge of an HTML text node)."""
        text = folded.text
        stops = sorted(set(barriers))
        out: list[tuple[int, int, str]] = []
        for start, end, alias in self.matches(text):
            before = bisect.bisect_right(stops, start)
            after = bisect.bisect_left(stops, end)
            # Never past a mailbox's length limits (64 + 255): a megabyte-long token is not
            # one mailbox, and walking it char by char would be slow.
            low = max(stops[before - 1] if before else 0, start - 64)
            high = min(stops[after] if after < len(stops) else len(text), end + 255)
            while start > low and _LOCAL_CHAR.match(text[start - 1]):
                start -= 1
            while end < high and (
                _HOST_CHAR.match(text[end])
                or (text[end] == "." and end + 1 < high and _HOST_CHAR.match(text[end + 1]))
            ):
                end += 1
            begin, finish = folded.source_span(start, end)
            if out and begin < out[-1][1]:  # grown into the previous one: one replacement
                out[-1] = (out[-1][0], max(out[-1][1], finish), out[-1][2])
                continue
            out.append((begin, finish, alias))
        return out


# How far before a domain a match can start: local part and tag (64 + 65), a quote, "@" and
# subdomains (253).
_REACH = 400


def _windows(text: AnyStr, needles: Iterable[AnyStr]) -> list[tuple[int, int]]:
    """Stretches of ``text`` that can hold a match: each ends where a domain form ends. The
    regex then runs over a few hundred characters, not a whole part (its alternation has no
    literal prefix for the engine to skip ahead with)."""
    found: list[tuple[int, int]] = []
    for needle in needles:
        at = text.find(needle)
        while at != -1:
            found.append((max(0, at - _REACH), at + len(needle)))
            at = text.find(needle, at + 1)
    found.sort()
    merged: list[tuple[int, int]] = []
    for low, high in found:
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def replace_spans(source: str, spans: list[tuple[int, int, str]]) -> str:
    """``source`` with each (start, end) replaced by its alias."""
    out: list[str] = []
    at = 0
    for start, end, alias in spans:
        out += [source[at:start], alias]
        at = end
    out.append(source[at:])
    return "".join(out)


__all__ = [
    "AT_GATE",
    "AT_GATE_BYTES",
    "DOMAIN_EQUIVALENTS",
    "DOT_INSENSITIVE",
    "SUBADDRESS_SEPARATOR",
    "Folded",
    "Matcher",
    "decode_refs",
    "domain_forms",
    "fold",
    "fold_map",
    "mailbox_key",
    "reader_view",
    "replace_spans",
]
