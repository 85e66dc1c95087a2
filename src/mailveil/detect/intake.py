"""Abuse-report intake: find the reported original message in whatever shape a report has.

``parse_report`` takes a report as received (the abuse mailbox, ``POST /v1/reports``) and
answers with a ``ReportParse``: ``found`` with the original's sender, recipients, date,
Message-ID, subject, Received chain and authentication results; ``no_original``; or
``rejected`` with a reason code. It never raises and never touches a database.

Shapes, tried on each level from the outside in: an ARF feedback report (RFC 5965); an
attached message (``message/rfc822``, or an ``.eml`` file, base64 or not); a forward inline
in the body (Gmail, Outlook, Apple Mail, Thunderbird, Yahoo, in several languages); a header
section pasted into the body. An attached message is itself unwrapped again (a customer's
forward of a forward), up to ``IntakeLimits.max_depth`` levels.

Reports are hostile: sizes, part counts, MIME depth, header sections, decoded bytes and
wall-clock time are bounded (``IntakeLimits``) and counted (``IntakeStats``); archives are
never opened; a charset that fails falls back to UTF-8 with replacement.
"""

from __future__ import annotations

import binascii
import email.policy
import functools
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser

from mailveil.detect import intake_headers as hdr
from mailveil.detect.intake_inline import (
    InlineForward,
    find_forward,
    find_pasted_headers,
    html_to_text,
    lenient_date,
)
from mailveil.detect.intake_model import (
    DETAILS,
    Address,
    Budget,
    FeedbackReport,
    IntakeLimits,
    IntakeStats,
    IntakeStop,
    OriginalMessage,
    Outcome,
    Reason,
    ReportEnvelope,
    ReportParse,
)
from mailveil.relay import prescan
from mailveil.relay.errors import (
    HeaderSectionTooBig,
    MimeTooDeep,
    RelayRefusal,
    TooManyHeaders,
    TooManyParts,
)

_PARSER = BytesParser(policy=email.policy.default)
# The relay's pre-scan refusals as intake reasons (the rest are header-field shapes).
_SCAN_REASONS: tuple[tuple[type[RelayRefusal], Reason], ...] = (
    (TooManyParts, Reason.TOO_MANY_PARTS),
    (MimeTooDeep, Reason.MIME_TOO_DEEP),
    (HeaderSectionTooBig, Reason.HEADERS_TOO_LARGE),
    (TooManyHeaders, Reason.HEADERS_TOO_LARGE),
)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_BOUNDARY_LINE = re.compile(rb"^--", re.MULTILINE)
_CONTAINER = re.compile(
    rb"^content-type:[ \t]*(?:\r?\n[ \t]+)*(?:multipart|message)/", re.IGNORECASE | re.MULTILINE
)
_ARCHIVE_TYPES = {
    "application/zip", "application/x-zip-compressed", "application/x-zip", "application/gzip",
    "application/x-gzip", "application/x-7z-compressed", "application/x-rar-compressed",
    "application/vnd.rar", "application/x-rar", "application/x-tar", "application/x-bzip2",
    "application/x-xz", "application/zstd", "application/x-compress", "application/java-archive",
}  # fmt: skip
_ARCHIVE_SUFFIXES = (".zip", ".gz", ".tgz", ".7z", ".rar", ".tar", ".bz2", ".xz", ".zst", ".jar")
_MESSAGE_TYPES = {"message/rfc822", "message/global"}
_HEADERS_TYPES = {"text/rfc822-headers", "message/rfc822-headers", "message/global-headers"}
_FEEDBACK_TYPES = {"message/feedback-report"}
_RESENT = ("Resent-From", "Resent-Sender", "Resent-To")


@dataclass
class _Level:
    """What one message level holds, found in one bounded walk of its parts."""

    feedback: Message | None = None
    messages: list[tuple[Message, bool]] = field(default_factory=list)  # (part, is .eml)
    headers: list[Message] = field(default_factory=list)
    eml_files: list[Message] = field(default_factory=list)
    plain: Message | None = None
    html: Message | None = None


@dataclass
class _State:
    budget: Budget
    envelope: ReportEnvelope | None = None
    feedback: FeedbackReport | None = None
    path: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def step(self, shape: str) -> None:
        self.path.append(shape)
        self.budget.stats.levels_unwrapped = len(self.path)
        if len(self.path) > self.budget.limits.max_depth:
            raise IntakeStop(Reason.FORWARD_TOO_DEEP)


# ------------------------------------------------------------------------------ parsing


@functools.cache
def _scan_limits(limits: IntakeLimits) -> prescan.Limits:
    """The pre-scan's limits for the intake: its own sizes, the relay's per-field bounds.
    Parts and depth are the intake's walk to count and name (``Budget.part``); the scan
    only keeps them in the range where the parser's cost stays linear."""
    return prescan.Limits(
        max_message_bytes=limits.max_raw_bytes,
        max_headers=1000,
        max_header_line=limits.max_header_bytes,
        max_header_bytes=limits.max_header_bytes,
        max_mime_depth=2 * limits.max_mime_depth,
        max_parts=2 * limits.max_parts + 64,
        max_total_header_fields=10_000,
        max_total_header_bytes=4 * limits.max_header_bytes,
    )


def _parse_bytes(data: bytes, budget: Budget, *, headers_only: bool = False) -> Message:
    """Parse within the limits: header section and part count checked on the bytes first,
    since the stdlib parser cannot be stopped once started."""
    budget.tick()
    end = _HEADER_END.search(data, 0, budget.limits.max_header_bytes + 4)
    budget.header_section(end.start() if end else len(data))
    if not headers_only:
        # Every part starts at a "--boundary" line: their number bounds the parts to build.
        lines = len(_BOUNDARY_LINE.findall(data))
        budget.stats.boundary_lines += lines
        if lines > 2 * budget.limits.max_parts + 64:
            raise IntakeStop(Reason.TOO_MANY_PARTS)
        if len(_CONTAINER.findall(data)) > budget.limits.max_parts:
            raise IntakeStop(Reason.TOO_MANY_PARTS)
    try:
        # The stdlib parser is quadratic on some header and nesting shapes: bound them first.
        prescan.scan(data, _scan_limits(budget.limits), headers_only=headers_only)
    except RelayRefusal as exc:
        reason = next((r for kind, r in _SCAN_REASONS if isinstance(exc, kind)), None)
        raise IntakeStop(reason or Reason.HEADERS_TOO_COMPLEX) from exc
    try:
        message = _PARSER.parsebytes(data, headersonly=headers_only)
    except RecursionError as exc:
        raise IntakeStop(Reason.MIME_TOO_DEEP) from exc
    budget.stats.messages_parsed += 1
    return message


def _walk(message: Message, budget: Budget) -> Iterator[Message]:
    """Parts of one level, iteratively (depth is attacker-chosen), not into message/* parts:
    an attached message is the next level and is walked when unwrapped."""
    stack: list[tuple[Message, int]] = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        budget.part(depth)
        budget.stats.defects += len(part.defects)
        budget.header_section(hdr.header_section_size(part))
        if budget.stats.parts_seen % 64 == 0:
            budget.tick()
        yield part
        if part.is_multipart() and _content_type(part) not in _MESSAGE_TYPES | _FEEDBACK_TYPES:
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend((c, depth + 1) for c in reversed(children) if isinstance(c, Message))


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # a crafted Content-Type the header parser chokes on
        return "application/octet-stream"


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except Exception:
        return ""
    return hdr.text_of(name).lower() if isinstance(name, str) else ""


def _is_attachment(part: Message) -> bool:
    values = hdr.raw_values(part, "Content-Disposition")
    return bool(values) and values[0].strip().lower().startswith("attachment")


def _survey(message: Message, budget: Budget) -> _Level:
    level = _Level()
    for part in _walk(message, budget):
        ctype = _content_type(part)
        name = _filename(part)
        if ctype in _ARCHIVE_TYPES or name.endswith(_ARCHIVE_SUFFIXES):
            budget.stats.archives_skipped += 1  # never opened: zip bombs stay shut
        elif ctype in _FEEDBACK_TYPES:
            level.feedback = level.feedback or part
        elif ctype in _MESSAGE_TYPES and part is not message:
            level.messages.append((part, name.endswith(".eml")))
        elif ctype in _HEADERS_TYPES:
            level.headers.append(part)
        elif name.endswith(".eml"):
            level.eml_files.append(part)
        elif ctype == "text/plain" and level.plain is None and not _is_attachment(part):
            level.plain = part
        elif ctype == "text/html" and level.html is None and not _is_attachment(part):
            level.html = part
    return level


# ----------------------------------------------------------------------------- decoding


def _cte(part: Message) -> str:
    values = hdr.raw_values(part, "Content-Transfer-Encoding")
    return values[0].strip().lower() if values else "7bit"


def _decode_transfer(text: str, cte: str, budget: Budget) -> bytes | None:
    """A transfer-encoded body as bytes, within the decoded-size limits (None: skipped)."""
    estimate = len(text) * 3 // 4 + 4 if cte == "base64" else len(text)
    if not budget.may_decode(estimate):
        return None
    raw = _to_bytes(text)
    if cte == "base64":
        try:
            data = binascii.a2b_base64(raw)
        except (binascii.Error, ValueError):
            # Bad padding, junk or a cut-off prefix: the alphabet only, whole quanta only.
            clean = re.sub(rb"[^A-Za-z0-9+/]", b"", raw)
            data = binascii.a2b_base64(clean[: len(clean) // 4 * 4]) if clean else b""
    elif cte == "quoted-printable":
        data = quopri.decodestring(raw)
    else:
        data = raw
    budget.decoded(len(data))
    return data


def _to_bytes(text: str) -> bytes:
    """A payload str back to its bytes: the parser keeps 8-bit bytes as surrogate escapes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _part_bytes(part: Message, budget: Budget, prefix: int | None = None) -> bytes | None:
    """A leaf part's body as bytes, transfer-decoded; only its first ``prefix`` characters.

    Read from the stored payload: ``get_payload()`` would decode the whole body with the
    declared charset first (mangling 8-bit bodies), ``decode=True`` would decode all of it.
    """
    payload = getattr(part, "_payload", None)
    if not isinstance(payload, str):
        return None
    if prefix is not None:
        payload = payload[:prefix]
    return _decode_transfer(payload, _cte(part), budget)


def _part_text(part: Message, budget: Budget) -> str:
    limit = budget.limits.max_scan_chars
    # A forward sits near the top: read a bounded prefix of a body however long it is.
    data = _part_bytes(part, budget, prefix=limit * 3)
    if data is None:
        return ""
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    # Cut before decoding (4 bytes a character at most) so a huge body costs nothing more.
    text = hdr.decode_bytes(data[: limit * 4], charset, budget.stats)[:limit]
    budget.stats.scanned_chars += len(text)
    return text


def _body_texts(level: _Level, budget: Budget) -> Iterator[str]:
    if level.plain is not None:
        yield _part_text(level.plain, budget)
    if level.html is not None:
        budget.tick()
        yield html_to_text(_part_text(level.html, budget), budget.limits.max_scan_chars)


def _message_payload(part: Message, budget: Budget) -> Message | None:
    """The message inside a message/* part; re-parsed from its bytes where the part is
    base64 or quoted-printable (not allowed by RFC 2046, sent all the same)."""
    payload = part.get_payload()
    inner = payload[0] if isinstance(payload, list) and payload else None
    cte = _cte(part)
    if cte in ("base64", "quoted-printable"):
        if isinstance(inner, Message):
            body = inner.get_payload()
            text = "".join(f"{k}: {v}\n" for k, v in inner.raw_items()) + (
                body if isinstance(body, str) else ""
            )
        else:
            text = payload if isinstance(payload, str) else ""
        data = _decode_transfer(text, cte, budget)
        return _parse_bytes(data, budget) if data else None
    return inner if isinstance(inner, Message) else None


def _eml_payload(part: Message, budget: Budget) -> Message | None:
    if _content_type(part) in _MESSAGE_TYPES:
        return _message_payload(part, budget)
    data = _part_bytes(part, budget)
    return _parse_bytes(data, budget) if data else None


def _headers_payload(part: Message, budget: Budget) -> Message | None:
    """A text/rfc822-headers part (or its kin) as a header-only message."""
    if part.is_multipart():
        inner = _message_payload(part, budget)
        return inner
    data = _part_bytes(part, budget)
    if not data:
        return None
    return _parse_bytes(data.lstrip(b"\r\n") + b"\n\n", budget, headers_only=True)


# ---------------------------------------------------------------------- the ARF report


def _feedback(part: Message, budget: Budget) -> FeedbackReport:
    fields = _message_payload(part, budget) if _cte(part) not in ("7bit", "8bit") else None
    if fields is None:
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        fields = inner if isinstance(inner, Message) else Message()
    stats = budget.stats

    def one(name: str) -> str | None:
        text = hdr.first_text(fields, name, stats)
        return text[:998] if text else None

    def many(name: str) -> tuple[str, ...]:
        return tuple(hdr.text_of(v, stats)[:998] for v in hdr.raw_values(fields, name)[:50])

    mail_from = one("Original-Mail-From")
    sender = hdr.addresses(mail_from) if mail_from else []
    arrival = one("Arrival-Date") or one("Received-Date")
    return FeedbackReport(
        feedback_type=(one("Feedback-Type") or "").lower() or None,
        user_agent=one("User-Agent"),
        version=one("Version"),
        original_mail_from=sender[0].address if sender else None,
        original_rcpt_to=hdr.address_list(hdr.raw_values(fields, "Original-Rcpt-To"), stats),
        arrival_date=hdr.parse_date(arrival),
        arrival_date_text=arrival,
        source_ip=hdr.valid_ip(one("Source-IP") or ""),
        reported_domains=many("Reported-Domain"),
        reported_uris=many("Reported-URI"),
        authentication_results=many("Authentication-Results"),
        auth_failure=one("Auth-Failure"),
        delivery_result=one("Delivery-Result"),
        fields=tuple(
            (k[:76], hdr.text_of(v, stats)[:998]) for k, v in list(fields.raw_items())[:100]
        ),
    )


def _from_feedback(report: FeedbackReport) -> OriginalMessage:
    return OriginalMessage(
        completeness="feedback",
        return_path=report.original_mail_from,
        to=report.original_rcpt_to,
        date=report.arrival_date,
        date_text=report.arrival_date_text,
        authentication_results=report.authentication_results,
    )


# ------------------------------------------------------------------------ inline forwards


def _from_inline(forward: InlineForward, stats: IntakeStats) -> OriginalMessage:
    fields = forward.fields
    sender: Address | None = None
    if "from" in fields:
        found = hdr.addresses(fields["from"])
        name = re.split(r"[<\[]", fields["from"], maxsplit=1)[0].strip().strip("\"'")
        if found:
            sender = Address(found[0].address, found[0].display_name or name)
        elif name:
            sender = Address("", name[:256])
    date_text = fields.get("date")
    date = hdr.parse_date(date_text) or (lenient_date(date_text) if date_text else None)
    return OriginalMessage(
        completeness="visible",
        sender=sender,
        to=hdr.address_list([fields.get("to", "")], stats),
        cc=hdr.address_list([fields.get("cc", "")], stats),
        date=date,
        date_text=date_text[:200] if date_text else None,
        subject=hdr.text_of(fields["subject"])[:998] if "subject" in fields else None,
    )


def _inline_chain(text: str, state: _State) -> OriginalMessage | None:
    """Unwrap inline forwards inside one body down to the innermost; None if there is none."""
    forward = find_forward(text)
    if forward is None:
        return None
    while True:
        state.step(forward.shape)
        state.budget.tick()
        inner = find_forward(forward.rest)
        if inner is None:
            return _from_inline(forward, state.budget.stats)
        forward = inner


# -------------------------------------------------------------------------- the levels


def _envelope(message: Message, stats: IntakeStats) -> ReportEnvelope:
    auth = hdr.raw_values(message, "Authentication-Results")
    return ReportEnvelope(
        sender=hdr.display_sender(message, stats),
        message_id=hdr.message_id(message, stats),
        subject=(hdr.first_text(message, "Subject", stats) or "")[:998] or None,
        authentication_results=hdr.bounded_texts(auth, stats),
        auth_results=tuple(r for v in auth[:20] for r in hdr.parse_auth_results(v)),
        dkim=tuple(hdr.parse_dkim(v) for v in hdr.raw_values(message, "DKIM-Signature")[:20]),
    )


def _unwrap(message: Message, state: _State) -> tuple[Message | None, OriginalMessage | None]:
    """One level: the next message to unwrap, or the original itself, or (None, None)."""
    budget = state.budget
    level = _survey(message, budget)
    if level.feedback is not None:
        state.step("arf")
        state.feedback = _feedback(level.feedback, budget)
        for part, _ in level.messages:
            inner = _message_payload(part, budget)
            if inner is not None:
                return None, _original(inner, "full", budget)
        for part in level.headers:
            inner = _headers_payload(part, budget)
            if inner is not None:
                return None, _original(inner, "headers", budget)
        state.notes.append("the feedback report carries no copy of the original")
        return None, _from_feedback(state.feedback)
    if len(level.messages) + len(level.eml_files) > 1:
        state.notes.append("several attached messages; the first one is read")
    for part, is_eml in level.messages:
        inner = _message_payload(part, budget)
        if _is_message(inner, state):
            state.step("eml_attachment" if is_eml else "rfc822_attachment")
            return inner, None
    for part in level.eml_files:
        inner = _eml_payload(part, budget)
        if _is_message(inner, state):
            state.step("eml_attachment")
            return inner, None
    for part in level.headers:
        inner = _headers_payload(part, budget)
        if inner is not None:
            state.step("rfc822_headers")
            return None, _original(inner, "headers", budget)
    for text in _body_texts(level, budget):
        found = _inline_chain(text, state)
        if found is not None:
            return None, found
        pasted = find_pasted_headers(text)
        if pasted is not None:
            state.step("headers_only")
            inner = _parse_bytes(pasted.encode("utf-8", "replace"), budget, headers_only=True)
            return None, _original(inner, "headers", budget)
    return None, None


def _is_message(inner: Message | None, state: _State) -> bool:
    """Whether an attachment parsed as a message has a header section (a renamed archive or
    junk parses as a body alone)."""
    if inner is None:
        return False
    if not inner.keys():
        state.notes.append("an attached message has no header section; skipped")
        return False
    return True


def _original(message: Message, completeness: str, budget: Budget) -> OriginalMessage:
    budget.header_section(hdr.header_section_size(message))
    return hdr.original_from_headers(message, completeness, budget.stats)


def _run(raw: bytes, state: _State) -> tuple[Outcome, Reason, OriginalMessage | None, str | None]:
    budget = state.budget
    budget.stats.raw_bytes = len(raw)
    if not raw.strip():
        raise IntakeStop(Reason.EMPTY)
    if len(raw) > budget.limits.max_raw_bytes:
        raise IntakeStop(Reason.TOO_LARGE)
    top = _parse_bytes(raw, budget)
    if not top.keys():
        raise IntakeStop(Reason.MALFORMED)
    state.envelope = _envelope(top, budget.stats)
    current = top
    while True:
        budget.tick()
        inner, original = _unwrap(current, state)
        if original is not None:
            return "found", Reason.FOUND, original, state.path[-1]
        if inner is None:
            break
        current = inner
    if current is not top:
        # The innermost attached message is not itself a forward: it is the original.
        return "found", Reason.FOUND, _original(current, "full", budget), state.path[-1]
    if any(hdr.raw_values(top, name) for name in _RESENT):
        # Redirected ("bounced") by the customer's client: the report is the original itself.
        return "found", Reason.FOUND, _original(top, "full", budget), "redirect"
    return "no_original", Reason.NO_ORIGINAL, None, None


def parse_report(raw: bytes, *, limits: IntakeLimits = IntakeLimits()) -> ReportParse:  # noqa: B008
    """Find the original message in an abuse report; never raises (see the module doc)."""
    budget = Budget(limits)
    state = _State(budget)
    original: OriginalMessage | None = None
    shape: str | None = None
    try:
        outcome, reason, original, shape = _run(raw, state)
    except IntakeStop as stop:
        outcome, reason = "rejected", stop.reason
    except RecursionError:
        outcome, reason = "rejected", Reason.MIME_TOO_DEEP
    except MemoryError:
        outcome, reason = "rejected", Reason.TOO_LARGE
    except Exception as exc:  # the contract is an outcome, whatever the input
        outcome, reason = "rejected", Reason.INTERNAL_ERROR
        state.notes.append(f"internal error: {type(exc).__name__}")  # the type only: no data
    budget.stats.elapsed_s = budget.elapsed()
    if outcome != "found":
        original, shape = None, None
    return ReportParse(
        outcome=outcome,
        reason=reason,
        detail=DETAILS[reason],
        stats=budget.stats,
        envelope=state.envelope,
        original=original,
        feedback=state.feedback,
        shape=shape,
        path=tuple(state.path),
        depth=len(state.path),
        notes=tuple(state.notes),
    )


__all__ = ["IntakeLimits", "ReportParse", "parse_report"]
