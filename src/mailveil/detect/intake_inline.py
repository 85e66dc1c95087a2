"""Forwards inline in a body: the separators and header blocks that mail clients print.

Each client prints the forwarded message's header lines under its own separator, in the
user's language: Gmail ``---------- Forwarded message ---------``, Thunderbird ``--------
Forwarded Message --------`` (a table in HTML), Yahoo ``----- Forwarded Message -----``,
Apple Mail ``Begin forwarded message:``, Outlook a ``From: / Sent: / To: / Subject:`` block
(after ``-----Original Message-----`` or a rule, or after nothing at all in HTML). Only the
visible header lines can be read there; the Received chain is gone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser

# Forward separators whose words say "forwarded message" in a supported language.
_FWD_WORDS = (
    r"forwarded message|weitergeleitete nachricht|message transf[ée]r[ée]|mensaje reenviado|"
    r"doorgestuurd bericht|doorgestuurde bericht|messaggio inoltrato|mensagem encaminhada|"
    r"mensagem reencaminhada|przekazana wiadomo[śs][ćc]|wiadomo[śs][ćc] przekazana|"
    r"forwarded e-?mail|message retransmis"
)
_DASHED = re.compile(rf"^\s*(-{{3,}})\s*(?:{_FWD_WORDS})\s*(-{{3,}})\s*$", re.IGNORECASE)
_ORIGINAL = re.compile(
    r"^\s*-{3,}\s*(?:original message|urspr[üu]ngliche nachricht|original-nachricht|"
    r"message d'origine|mensaje original|oorspronkelijk bericht|messaggio originale|"
    r"mensagem original|wiadomo[śs][ćc] oryginalna)\s*-{3,}\s*$",
    re.IGNORECASE,
)
_APPLE = re.compile(
    r"^\s*(?:begin forwarded message|anfang der weitergeleiteten (?:nachricht|e-mail)|"
    r"d[ée]but du message r[ée]exp[ée]di[ée]|d[ée]but du message transf[ée]r[ée]|"
    r"inicio del mensaje reenviado|begin doorgestuurd bericht|inizio messaggio inoltrato|"
    r"in[íi]cio da mensagem reencaminhada|in[íi]cio da mensagem encaminhada|"
    r"pocz[ąa]tek przekazywanej wiadomo[śs]ci)\s*:?\s*$",
    re.IGNORECASE,
)
_RULE = re.compile(r"^\s*_{10,}\s*$")

# "Sent" in every supported language: a date label that names the sending, not the writing.
_SENT_LABELS = (
    "sent",
    "gesendet",
    "envoyé",
    "envoye",
    "enviado",
    "enviada",
    "verzonden",
    "verstuurd",
    "inviato",
    "wysłano",
    "wysłane",
)
# Header labels of forward blocks, per role, in every supported language.
_LABELS: dict[str, tuple[str, ...]] = {
    "from": ("from", "von", "de", "van", "da", "od", "absender", "expéditeur", "remitente"),
    "date": ("date", "datum", "data", "fecha", *_SENT_LABELS),
    "to": ("to", "an", "à", "a", "para", "aan", "do", "destinataire", "destinatario", "pour"),
    "cc": ("cc", "kopie", "copie à", "copie", "cópia", "copia", "dw", "kopia"),
    "subject": (
        "subject",
        "betreff",
        "objet",
        "asunto",
        "onderwerp",
        "oggetto",
        "assunto",
        "temat",
        "sujet",
    ),
    "reply_to": ("reply-to", "antwort an", "répondre à", "responder a", "antwoord aan"),
}
_ROLE_OF = {label: role for role, labels in _LABELS.items() for label in labels}
_LABEL_LINE = re.compile(
    r"^\s*[*]?\s*("
    + "|".join(sorted((re.escape(k) for k in _ROLE_OF), key=len, reverse=True))
    + r")\s*[*]?\s*[:：]\s*[*]?\s*(.*?)\s*$",
    re.IGNORECASE,
)
_QUOTE = re.compile(r"^(?:\s*>)+ ?")
MAX_BLOCK_LINES = 40


@dataclass(frozen=True, slots=True)
class InlineForward:
    """One inline forward: the client it looks like, its visible header lines, what follows."""

    shape: str
    fields: dict[str, str]
    sent_label: bool
    rest: str


def _shape_of_dashes(lead: str, trail: str) -> str:
    # The clients differ in nothing but their dashes: Gmail 10/9, Thunderbird 8/8, Yahoo 5/5.
    if len(lead) == 10 and len(trail) == 9:
        return "inline_gmail"
    if len(lead) == 8 and len(trail) == 8:
        return "inline_thunderbird"
    if len(lead) == 5 and len(trail) == 5:
        return "inline_yahoo"
    return "inline_generic"


def _label(line: str) -> tuple[str, str, str] | None:
    match = _LABEL_LINE.match(line)
    if not match:
        return None
    label = match.group(1).lower()
    return _ROLE_OF[label], label, match.group(2)


def _header_block(lines: list[str], start: int) -> tuple[dict[str, str], bool, int]:
    """The label lines from ``start`` (blank lines between them allowed), and where they end."""
    fields: dict[str, str] = {}
    sent = False
    i = start
    last_role: str | None = None
    while i < len(lines) and i - start < MAX_BLOCK_LINES:
        line = lines[i]
        if not line.strip():
            j = i + 1
            while j < len(lines) and not lines[j].strip() and j - i < 3:
                j += 1
            # A blank line ends the block unless another not-yet-seen label line follows.
            nxt = _label(lines[j]) if j < len(lines) else None
            if fields and nxt and nxt[0] not in fields:
                i = j
                continue
            break
        found = _label(line)
        if found and found[0] not in fields:
            role, label, value = found
            fields[role] = value
            sent = sent or (role == "date" and label in _SENT_LABELS)
            last_role = role
        elif found is None and last_role in ("to", "cc") and fields and "subject" not in fields:
            fields[last_role] += " " + line.strip()  # a wrapped recipient list
        elif found is None:
            break
        i += 1
    return fields, sent, i


def _plausible(fields: dict[str, str], after_separator: bool) -> bool:
    if "from" not in fields:
        return False
    others = sum(role in fields for role in ("date", "to", "subject"))
    # Without a separator a header block must say more before it counts as a forward.
    return others >= (1 if after_separator else 2)


def find_forward(text: str) -> InlineForward | None:
    """The first inline forward in ``text``, or None."""
    lines = [_QUOTE.sub("", line) for line in text.splitlines()]
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        shape: str | None = None
        dashed = _DASHED.match(stripped)
        if dashed:
            shape = _shape_of_dashes(dashed.group(1), dashed.group(2))
        elif _APPLE.match(stripped):
            shape = "inline_apple"
        elif _ORIGINAL.match(stripped) or _RULE.match(stripped):
            shape = "inline_outlook"
        if shape is not None:
            start = i + 1
            while start < len(lines) and not lines[start].strip() and start - i < 4:
                start += 1
            fields, sent, end = _header_block(lines, start)
            if _plausible(fields, after_separator=True):
                if shape == "inline_generic" and sent:
                    shape = "inline_outlook"
                return InlineForward(shape, fields, sent, "\n".join(lines[end:]))
            continue
        found = _label(line)
        if found and found[0] == "from":
            fields, sent, end = _header_block(lines, i)
            if _plausible(fields, after_separator=False):
                # Outlook prints a bare block whose date is labelled "Sent" in every language.
                kind = "inline_outlook" if sent else "inline_generic"
                return InlineForward(kind, fields, sent, "\n".join(lines[end:]))
    return None


# ------------------------------------------------------------------ pasted header sections

_HEADER_LINE = re.compile(r"^[A-Za-z0-9-]{1,76}:")
_KEY_FIELDS = re.compile(r"^(received|from|message-id|return-path|date|to|subject):", re.IGNORECASE)


def find_pasted_headers(text: str) -> str | None:
    """A header section pasted into a body ("show original", an MTA's copy of the headers).

    It must be a run of RFC 5322 field lines (with folded continuations) holding a Received
    field and a From field, so an inline forward's few labels never count as one.
    """
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith(("Received:", "Return-Path:", "Delivered-To:", "X-")) and not (
            lines[i].lower().startswith("received:")
        ):
            i += 1
            continue
        j = i
        names: set[str] = set()
        while j < len(lines) and (
            _HEADER_LINE.match(lines[j])
            or (j > i and lines[j][:1] in (" ", "\t") and lines[j].strip())
        ):
            key = _KEY_FIELDS.match(lines[j])
            if key:
                names.add(key.group(1).lower())
            j += 1
        if "received" in names and "from" in names and j - i >= 3:
            return "\n".join(lines[i:j]) + "\n\n"
        i = max(j, i + 1)
    return None


# ------------------------------------------------------------------------- client dates

# Month names by their first letters, in the supported languages (Polish by number only).
_MONTHS = {
    "jan": 1,
    "gen": 1,
    "ene": 1,
    "janv": 1,
    "feb": 2,
    "fév": 2,
    "fev": 2,
    "fév.": 2,
    "mar": 3,
    "mär": 3,
    "mrt": 3,
    "apr": 4,
    "avr": 4,
    "abr": 4,
    "may": 5,
    "mai": 5,
    "mei": 5,
    "mag": 5,
    "mayo": 5,
    "jun": 6,
    "jui": 6,
    "giu": 6,
    "jul": 7,
    "lug": 7,
    "aug": 8,
    "aoû": 8,
    "aou": 8,
    "ago": 8,
    "sep": 9,
    "set": 9,
    "oct": 10,
    "okt": 10,
    "ott": 10,
    "out": 10,
    "nov": 11,
    "dec": 12,
    "dez": 12,
    "déc": 12,
    "dic": 12,
}
_WORD = re.compile(r"[^\W\d_]{3,}")
_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([AaPp]\.?[Mm]\.?)?")
_NUMERIC = re.compile(r"\b(\d{1,2})[./](\d{1,2})[./](\d{4})\b|\b(\d{4})-(\d{2})-(\d{2})\b")


def _month(word: str) -> int | None:
    word = word.lower()
    if word.startswith("juil"):
        return 7
    if word.startswith("juin"):
        return 6
    return _MONTHS.get(word[:4]) or _MONTHS.get(word[:3])


def lenient_date(text: str) -> datetime | None:
    """A date as clients print it in forwards ("Mon, Jan 6, 2025 at 10:15 AM", "6. Januar
    2025 um 10:15", "06.01.2025 10:15"): naive, since such lines rarely name a zone."""
    text = text[:200]
    clock = _TIME.search(text)
    hour = minute = second = 0
    rest = text
    if clock:
        hour, minute = int(clock.group(1)), int(clock.group(2))
        second = int(clock.group(3) or 0)
        meridian = (clock.group(4) or "").lower().replace(".", "")
        if meridian == "pm" and hour < 12:
            hour += 12
        elif meridian == "am" and hour == 12:
            hour = 0
        rest = text[: clock.start()] + " " + text[clock.end() :]
    numeric = _NUMERIC.search(rest)
    try:
        if numeric and numeric.group(3):
            day, month, year = int(numeric.group(1)), int(numeric.group(2)), int(numeric.group(3))
            return datetime(year, month, day, hour, minute, second)
        if numeric:
            year, month, day = int(numeric.group(4)), int(numeric.group(5)), int(numeric.group(6))
            return datetime(year, month, day, hour, minute, second)
        year_at = re.search(r"\b(\d{4})\b", rest)
        if year_at is None:
            return None
        # The month word nearest before the year: "mar, 7 ene 2025" is a Tuesday in January.
        months = [m for w in _WORD.findall(rest[: year_at.start()]) if (m := _month(w))]
        days = [d for d in re.findall(r"\b(\d{1,2})\b", rest) if 1 <= int(d) <= 31]
        if months and days:
            return datetime(int(year_at.group(1)), months[-1], int(days[0]), hour, minute, second)
    except ValueError:
        return None
    return None


# --------------------------------------------------------------------------- HTML to text

_BLOCK_TAGS = {
    "br",
    "p",
    "div",
    "tr",
    "li",
    "table",
    "blockquote",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "section",
    "article",
    "header",
    "footer",
}
_SKIP_TAGS = {"script", "style", "head", "title"}


class _TextExtractor(HTMLParser):
    def __init__(self, budget: int) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.size = 0
        self.budget = budget
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skipping += 1
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")
        elif tag in ("td", "th"):
            self.out.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skipping or self.size > self.budget:
            return
        self.out.append(data)
        self.size += len(data)


_NEWLINES = re.compile(r"[ \t\u00a0]*\n[ \t\u00a0\n]*\n")


def html_to_text(html: str, budget: int) -> str:
    """Visible text of HTML, one line per block element, table cells side by side."""
    parser = _TextExtractor(budget)
    try:
        parser.feed(html[: budget * 4])
        parser.close()
    except Exception:  # HTMLParser is lenient; this only guards against the unforeseen
        parser.out.append("\n")
    text = "".join(parser.out).replace("\u00a0", " ")
    # One blank line at most: clients wrap each header line in its own block.
    return _NEWLINES.sub("\n\n", text)


__all__ = ["InlineForward", "find_forward", "find_pasted_headers", "html_to_text", "lenient_date"]
