"""Reading delivery reports (DSNs) that come back to a VERP address.

``parse_dsn`` reads RFC 3464 ``multipart/report; report-type=delivery-status`` (and RFC 6533's
UTF-8 variant, and the rare base64-encoded status part) with per-recipient Action, Status and
Diagnostic-Code; or one of the plain-text shapes big providers and older MTAs still send
(qmail, Exim, Yahoo, old Exchange, ...), whose status is then read out of the text, never out
of the quoted original. It never raises: what it cannot read is kind "unknown", and an
out-of-office reply (which also goes to the envelope sender) is kind "autoreply".

Kinds: ``hard`` (5.x.x: the address will not work), ``soft`` (4.x.x, yet the report says the
delivery failed, e.g. the queue lifetime expired), ``delayed`` (still being retried),
``success`` (delivered/relayed/expanded reports), ``autoreply``, ``unknown``.

A report holds the failed recipient's real address (Final-Recipient, the diagnostic, the
returned message): ``Dsn`` keeps those fields out of ``repr`` and this module logs nothing.
``relay.bounces.safe_diagnostic`` is the only way report text leaves the relay.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.header
import email.policy
import quopri
import re
from dataclasses import dataclass, field
from email.message import Message

KIND_HARD = "hard"
KIND_SOFT = "soft"
KIND_DELAYED = "delayed"
KIND_SUCCESS = "success"
KIND_AUTOREPLY = "autoreply"
KIND_UNKNOWN = "unknown"
KINDS = (KIND_HARD, KIND_SOFT, KIND_DELAYED, KIND_SUCCESS, KIND_AUTOREPLY, KIND_UNKNOWN)
# Worst first: a report's kind is its worst recipient's.
_SEVERITY = {k: i for i, k in enumerate((KIND_HARD, KIND_SOFT, KIND_DELAYED, KIND_SUCCESS))}

FORMAT_RFC3464 = "rfc3464"
FORMAT_TEXT = "text"
FORMAT_NONE = "none"

# Reading is bounded whatever the report's size: the server's SIZE limit bounds the bytes,
# these bound the work on them.
MAX_TEXT_CHARS = 64 * 1024
MAX_RECIPIENTS = 100
MAX_FIELD_CHARS = 2000

_ENHANCED = r"[245]\.\d{1,3}\.\d{1,3}"
# "550 5.1.1", "550-5.1.1", "550 #5.1.1": the reply code with its enhanced code.
_REPLY_ENHANCED = re.compile(rf"(?<![\w.])([245]\d\d)[ -]#?({_ENHANCED})(?![\w.]*\d)")
# A lone enhanced code, as qmail writes it "(#5.1.1)"; not a version number or an IP address.
_LONE_ENHANCED = re.compile(r"(?<![\w.])#?([45]\.\d{1,3}\.\d{1,3})(?![\w]|\.\d)")
# A lone basic reply code where bounce texts put one: "said: 550", "554:", "'550", "<...>: 550".
_LONE_BASIC = re.compile(
    r"(?:^|said:|error:|returned|[\s:'\"(\[>])\s*([45][0-5]\d)(?=[\s\-:'\")\].]|$)"
)

_HARD_WORDS = re.compile(
    r"permanent(?:ly)? (?:error|failure|fatal)|this is a permanent error|user unknown|"
    r"unknown user|no such (?:user|mailbox|recipient)|mailbox (?:unavailable|not found|"
    r"does not exist)|does not exist|recipient address rejected|address rejected|"
    r"account (?:has been )?(?:disabled|deleted|suspended)|invalid recipient|"
    r"unrouteable address|no mailbox here",
    re.IGNORECASE,
)
_DELAY_WORDS = re.compile(
    r"has not (?:yet )?been delivered|not been delivered yet|delivery (?:is )?delayed|"
    r"still (?:trying|being retried)|will (?:continue|keep) (?:trying|to try)|"
    r"will be retried|warning: message .* delayed|delay(?:ed)? (?:reason|notification)",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery status notification|delivery (?:failure|failed|problem|report)|"
    r"failure notice|returned mail|mail delivery (?:failed|system|subsystem|failure)|"
    r"could not be delivered|non[- ]?delivery|delivery has failed|delayed mail|"
    r"delivery (?:delayed|warning)|warning: could not send|message not delivered",
    re.IGNORECASE,
)
_BOUNCE_SENDER = re.compile(r"mailer[-_]?daemon|postmaster|mail[-_]?delivery|mail[-_]?daemon", re.I)
_BOUNCE_TEXT = re.compile(
    r"could not be delivered|couldn't be delivered|undeliverable|delivery (?:has )?failed|"
    r"unable to deliver|this is the mail system at host|qmail-send program|"
    r"the following address(?:es)? failed|delivery to the following recipient|"
    r"message (?:was|wasn't|was not) delivered|returned to sender|permanent error|"
    r"has not (?:yet )?been delivered|failed permanently",
    re.IGNORECASE,
)
_AUTOREPLY_SUBJECT = re.compile(
    r"out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?(?:reply|response)|"
    r"autoreply|vacation|abwesenheit|absence|réponse automatique|away from",
    re.IGNORECASE,
)
# Where plain-text bounces start quoting the original message: nothing after is the report.
_ORIGINAL_STARTS = re.compile(
    r"^[ \t>]*(?:-+ ?)?(?:"
    r"below this line is a copy of the message|this is a copy of the message|"
    r"original message follows|the original message|original message headers|"
    r"a copy of the original message|forwarded message|original message was received|"
    r"----- original message -----|headers of the original message|"
    r"message headers follow|original-envelope|returned message"
    r")",
    re.IGNORECASE | re.MULTILINE,
)
_RETURNED = ("message/rfc822", "message/global")
_DSN_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")


@dataclass(frozen=True)
class RecipientReport:
    """One per-recipient block of a report (or the one recipient a text bounce is about)."""

    kind: str
    action: str | None = None
    status: str | None = None
    # As the remote side wrote them: they hold the failed recipient's real address.
    recipient: str | None = field(default=None, repr=False)
    diagnostic: str | None = field(default=None, repr=False)
    remote_mta: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Dsn:
    """What a delivery report says. ``diagnostic`` is raw: pass it through ``safe_diagnostic``
    before it goes anywhere."""

    kind: str
    format: str
    status: str | None = None
    action: str | None = None
    recipients: tuple[RecipientReport, ...] = ()
    diagnostic: str | None = field(default=None, repr=False)
    reporting_mta: str | None = field(default=None, repr=False)
    # The Message-ID of the returned message (the relay's own, if it is a true bounce).
    original_message_id: str | None = None

    @property
    def hard(self) -> bool:
        return self.kind == KIND_HARD

    @property
    def failed(self) -> bool:
        """The message was not delivered and will not be (hard or soft)."""
        return self.kind in (KIND_HARD, KIND_SOFT)

    @property
    def soft(self) -> bool:
        return self.kind in (KIND_SOFT, KIND_DELAYED)


UNKNOWN = Dsn(kind=KIND_UNKNOWN, format=FORMAT_NONE)


def status_class(status: str | None) -> str | None:
    return status[0] if status and status[:1] in "245" else None


def _kind_of(action: str | None, status: str | None) -> str:
    action = (action or "").strip().lower()
    cls = status_class(status)
    if action == "delayed":
        return KIND_DELAYED
    if action in ("delivered", "relayed", "expanded"):
        return KIND_SUCCESS
    if action == "failed":
        # RFC 3464 makes Status mandatory; without one, do not count it against the address.
        return KIND_HARD if cls == "5" else KIND_SOFT
    if cls == "5":
        return KIND_HARD
    if cls == "4":
        return KIND_SOFT
    if cls == "2":
        return KIND_SUCCESS
    return KIND_UNKNOWN


def status_in_text(text: str) -> str | None:
    """The enhanced status code a free-text diagnostic gives, or one derived from its basic
    reply code (``550`` -> ``5.0.0``), or from its wording; None if it gives none."""
    text = text[:MAX_TEXT_CHARS]
    found = _REPLY_ENHANCED.search(text)
    if found:
        basic, enhanced = found.group(1), found.group(2)
        # A reply whose classes disagree is read by its basic code (what the MTA acted on).
        return enhanced if basic[0] == enhanced[0] else f"{basic[0]}.0.0"
    found = _LONE_ENHANCED.search(text)
    if found:
        return found.group(1)
    found = _LONE_BASIC.search(text)
    if found:
        return f"{found.group(1)[0]}.0.0"
    if _DELAY_WORDS.search(text):
        return "4.0.0"
    if _HARD_WORDS.search(text):
        return "5.0.0"
    return None


def _clip(value: str) -> str:
    return value.strip()[:MAX_FIELD_CHARS]


def _address_field(value: str | None) -> str | None:
    """``rfc822; someone@example.com`` -> ``someone@example.com``."""
    if not value:
        return None
    _, _, address = value.partition(";")
    return _clip(address or value).strip("<>") or None


def _dsn_blocks(text: str) -> list[dict[str, str]]:
    """The field blocks of a message/delivery-status body (blank-line separated, folded)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                if len(blocks) > MAX_RECIPIENTS:
                    break
            current, last = {}, None
            continue
        if line[:1] in " \t" and last is not None:
            current[last] = _clip(current[last] + " " + line.strip())
            continue
        match = _DSN_FIELD.match(line)
        if match:
            last = match.group(1).lower()
            current.setdefault(last, _clip(match.group(2)))
    if current:
        blocks.append(current)
    return blocks


def _payload_text(part: Message) -> str:
    """A leaf part's body as text, decoded from its transfer encoding and charset."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw[:MAX_TEXT_CHARS] if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload[: MAX_TEXT_CHARS * 4].decode(charset, "replace")[:MAX_TEXT_CHARS]
    except LookupError:
        return payload[: MAX_TEXT_CHARS * 4].decode("utf-8", "replace")[:MAX_TEXT_CHARS]


def _unescape(text: str) -> str:
    """8-bit bytes the parser kept as surrogates, read as UTF-8 (RFC 6533 reports are UTF-8)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _status_part_text(part: Message) -> str:
    """The text of a (global-)delivery-status part however the parser stored it."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _payload_text(part)
    # The stdlib parses message/delivery-status into one header block per Message, and other
    # message/* types into one Message whose body holds the remaining blocks.
    chunks: list[str] = []
    for block in payload:
        if not isinstance(block, Message):
            continue
        # raw_items: 8-bit values as stored (surrogates), not replaced by the compat32 reader.
        chunks.append("\n".join(f"{k}: {v}" for k, v in block.raw_items()))
        body = block.get_payload(decode=True)  # the stored bytes: blocks have no encoding
        if isinstance(body, bytes) and body.strip():
            chunks.append(body[:MAX_TEXT_CHARS].decode("utf-8", "surrogateescape"))
    text = "\n\n".join(chunks)
    # The parser splits blocks before any transfer decoding; a rare reporter encodes them.
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        try:
            data = base64.b64decode(re.sub(r"[^A-Za-z0-9+/]", "", text) + "==")
        except binascii.Error:
            return ""
        return data.decode("utf-8", "replace")
    if cte == "quoted-printable":
        data = quopri.decodestring(text.strip().encode("utf-8", "surrogateescape"))
        return data.decode("utf-8", "replace")
    return _unescape(text)


def _header(message: Message, name: str) -> str:
    raw = message.get(name)
    if raw is None:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(str(raw))))[:1000]
    except Exception:  # A report we cannot read is "unknown", never an error.
        return str(raw)[:1000]


def _walk(message: Message) -> list[Message]:
    """Parts of the report, not descending into a returned message (iteratively: the depth is
    the sender's choice)."""
    out: list[Message] = []
    stack = [message]
    while stack and len(out) < 500:
        part = stack.pop()
        out.append(part)
        if part is not message and part.get_content_type() in _RETURNED:
            continue
        if part.is_multipart():
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend(c for c in reversed(children) if isinstance(c, Message))
    return out


def _original_message_id(message: Message) -> str | None:
    for part in _walk(message):
        ctype = part.get_content_type()
        if ctype in _RETURNED:
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                value = inner[0].get("Message-ID")
                return _clip(str(value)) if value else None
        if ctype in ("text/rfc822-headers", "text/global-headers"):
            headers = email.message_from_string(_payload_text(part) + "\n\n")
            value = headers.get("Message-ID")
            return _clip(str(value)) if value else None
    return None


def _human_text(message: Message) -> str:
    """The report's own words: text parts outside any returned message, cut where a copy of the
    original starts."""
    texts: list[str] = []
    for part in _walk(message):
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if part.get_content_subtype() not in ("plain", "html"):
            continue
        text = _payload_text(part)
        if part.get_content_subtype() == "html":
            text = re.sub(r"<[^>]*>", " ", text)
        texts.append(text)
        if sum(map(len, texts)) > MAX_TEXT_CHARS:
            break
    text = "\n".join(texts)[:MAX_TEXT_CHARS]
    cut = _ORIGINAL_STARTS.search(text)
    return text[: cut.start()] if cut else text


def _from_report(message: Message, report: Message) -> Dsn | None:
    blocks = _dsn_blocks(_status_part_text(report))
    if not blocks:
        return None
    per_message = blocks[0] if "reporting-mta" in blocks[0] or len(blocks) > 1 else {}
    recipients: list[RecipientReport] = []
    for block in blocks[1:] if per_message else blocks:
        if not ({"action", "status", "final-recipient", "original-recipient"} & block.keys()):
            continue
        diagnostic = block.get("diagnostic-code")
        if diagnostic and ";" in diagnostic[:20]:
            diagnostic = diagnostic.split(";", 1)[1].strip()
        status = block.get("status", "").strip()
        found = re.match(rf"({_ENHANCED})\b", status)
        status_code = found.group(1) if found else None
        if status_code is None and diagnostic:
            status_code = status_in_text(diagnostic)
        action = (block.get("action") or "").strip().lower() or None
        recipients.append(
            RecipientReport(
                kind=_kind_of(action, status_code),
                action=action,
                status=status_code,
                recipient=_address_field(block.get("final-recipient"))
                or _address_field(block.get("original-recipient")),
                diagnostic=diagnostic,
                remote_mta=_address_field(block.get("remote-mta")),
            )
        )
    if not recipients:
        return None
    worst = min(recipients, key=lambda r: _SEVERITY.get(r.kind, len(_SEVERITY)))
    return Dsn(
        kind=worst.kind,
        format=FORMAT_RFC3464,
        status=worst.status,
        action=worst.action,
        recipients=tuple(recipients),
        diagnostic=worst.diagnostic,
        reporting_mta=_address_field(per_message.get("reporting-mta")),
        original_message_id=_original_message_id(message),
    )


def _looks_like_bounce(message: Message, text: str) -> bool:
    sender = _header(message, "From") + " " + _header(message, "Return-Path")
    return bool(
        _BOUNCE_SENDER.search(sender)
        or _BOUNCE_SUBJECT.search(_header(message, "Subject"))
        or _BOUNCE_TEXT.search(text)
    )


def _is_autoreply(message: Message) -> bool:
    auto = _header(message, "Auto-Submitted").lower()
    return bool(
        auto.startswith("auto-replied")
        or message.get("X-Autoreply")
        or message.get("X-Autorespond")
        or _header(message, "Precedence").lower() == "auto_reply"
        or _AUTOREPLY_SUBJECT.search(_header(message, "Subject"))
    )


def _from_text(message: Message) -> Dsn:
    text = _human_text(message)
    if not _looks_like_bounce(message, text):
        return Dsn(
            kind=KIND_AUTOREPLY if _is_autoreply(message) else KIND_UNKNOWN, format=FORMAT_NONE
        )
    status = status_in_text(text)
    if status is None:
        return Dsn(
            kind=KIND_UNKNOWN, format=FORMAT_TEXT, original_message_id=_original_message_id(message)
        )
    action = "delayed" if status.startswith("4") and _DELAY_WORDS.search(text) else "failed"
    kind = _kind_of(action, status)
    diagnostic = _diagnostic_line(text, status)
    return Dsn(
        kind=kind,
        format=FORMAT_TEXT,
        status=status,
        action=action,
        recipients=(
            RecipientReport(kind=kind, action=action, status=status, diagnostic=diagnostic),
        ),
        diagnostic=diagnostic,
        original_message_id=_original_message_id(message),
    )


def _diagnostic_line(text: str, status: str) -> str:
    """The line of a text bounce that carries the status (with the next one, often its
    continuation), else the first non-empty lines: a short excerpt, not the whole text."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    code = status if status[2:] != "0.0" else status[0]
    for i, line in enumerate(lines):
        if code in line or (status.endswith(".0.0") and re.search(rf"\b{status[0]}\d\d\b", line)):
            return _clip(" ".join(lines[i : i + 2]))[:500]
    return _clip(" ".join(lines[:3]))[:500]


def parse_dsn(message: bytes) -> Dsn:
    """Read a delivery report. Never raises: garbage is ``Dsn(kind="unknown")``."""
    try:
        parsed = email.message_from_bytes(message, policy=email.policy.compat32)
        for part in _walk(parsed):
            ctype = part.get_content_type()
            if ctype in ("message/delivery-status", "message/global-delivery-status"):
                found = _from_report(parsed, part)
                if found is not None:
                    return found
        return _from_text(parsed)
    except Exception:  # A report we cannot read is "unknown", never an error.
        return UNKNOWN


__all__ = [
    "FORMAT_NONE",
    "FORMAT_RFC3464",
    "FORMAT_TEXT",
    "KINDS",
    "KIND_AUTOREPLY",
    "KIND_DELAYED",
    "KIND_HARD",
    "KIND_SOFT",
    "KIND_SUCCESS",
    "KIND_UNKNOWN",
    "UNKNOWN",
    "Dsn",
    "RecipientReport",
    "parse_dsn",
    "status_class",
    "status_in_text",
]
