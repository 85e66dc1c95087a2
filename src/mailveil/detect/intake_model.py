"""The values the abuse-report intake answers with, its limits and its running budget.

Everything here is plain data: the parser in ``intake`` fills it, callers read it. Nothing
in a reason text ever quotes the report: reports carry real addresses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

MiB = 1024 * 1024

Outcome = Literal["found", "no_original", "rejected"]
Completeness = Literal["full", "headers", "visible", "feedback"]


class Reason(StrEnum):
    """Stable codes for every outcome; callers branch on these, people read ``detail``."""

    FOUND = "found"
    NO_ORIGINAL = "no-original"
    EMPTY = "empty"
    TOO_LARGE = "too-large"
    HEADERS_TOO_LARGE = "headers-too-large"
    HEADERS_TOO_COMPLEX = "headers-too-complex"
    TOO_MANY_PARTS = "too-many-parts"
    MIME_TOO_DEEP = "mime-too-deep"
    FORWARD_TOO_DEEP = "forward-too-deep"
    DECODED_LIMIT = "decoded-limit"
    TIME_BUDGET = "time-budget"
    MALFORMED = "malformed"
    INTERNAL_ERROR = "internal-error"


DETAILS: dict[Reason, str] = {
    Reason.FOUND: "original message found",
    Reason.NO_ORIGINAL: "no original message found in the report",
    Reason.EMPTY: "the report is empty",
    Reason.TOO_LARGE: "the report is larger than the intake accepts",
    Reason.HEADERS_TOO_LARGE: "a header section is larger than the intake accepts",
    Reason.HEADERS_TOO_COMPLEX: (
        "a header field has more parameters or encoded-words, or a header section more "
        "Received fields, than the intake accepts"
    ),
    Reason.TOO_MANY_PARTS: "the report has more MIME parts than the intake accepts",
    Reason.MIME_TOO_DEEP: "the report's MIME structure is nested too deeply",
    Reason.FORWARD_TOO_DEEP: "the report is forwarded more levels deep than the intake unwraps",
    Reason.DECODED_LIMIT: "decoding the report's parts would exceed the intake's size limit",
    Reason.TIME_BUDGET: "reading the report took longer than its time budget",
    Reason.MALFORMED: "the report is not a readable e-mail message",
    Reason.INTERNAL_ERROR: "the intake failed on this report",
}


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    max_raw_bytes: int = 10 * MiB
    # Per header section (the report's and each part's or unwrapped message's).
    max_header_bytes: int = 1 * MiB
    max_part_decoded_bytes: int = 4 * MiB
    max_total_decoded_bytes: int = 16 * MiB
    # The stdlib parser spends ~0.3 ms a part under policy.default (it parses Content-Type
    # per part); 500 parts keep the worst case well inside the time budget.
    max_parts: int = 500
    # MIME nesting (multipart and message/*); the stdlib parser recurses.
    max_mime_depth: int = 40
    # Forwarding levels unwrapped (attachments and inline forwards alike).
    max_depth: int = 10
    # Characters of one body searched for an inline forward: markers sit near the top.
    max_scan_chars: int = 512 * 1024
    time_budget_s: float = 2.0


@dataclass(slots=True)
class IntakeStats:
    """Counters kept as the report is read: the evidence that limits were enforced."""

    raw_bytes: int = 0
    largest_header_section: int = 0
    boundary_lines: int = 0
    parts_seen: int = 0
    max_mime_depth_seen: int = 0
    decoded_bytes: int = 0
    parts_skipped_oversize: int = 0
    archives_skipped: int = 0
    messages_parsed: int = 0
    levels_unwrapped: int = 0
    scanned_chars: int = 0
    defects: int = 0
    charset_fallbacks: int = 0
    elapsed_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Address:
    """An address and its display name; ``address`` is empty where only a name was shown."""

    address: str
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class Hop:
    """One parsed ``Received`` field; ``None`` where the field did not say (or not readably)."""

    from_host: str | None
    by_host: str | None
    ip: str | None
    helo: str | None
    for_address: str | None
    date: datetime | None
    raw: str


@dataclass(frozen=True, slots=True)
class DkimSignature:
    domain: str | None
    selector: str | None


@dataclass(frozen=True, slots=True)
class AuthResult:
    """One method result from Authentication-Results, e.g. ``spf=pass smtp.mailfrom=...``."""

    method: str
    result: str
    properties: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class OriginalMessage:
    """The reported message as far as the report shows it (see ``completeness``).

    ``full``: a whole message; ``headers``: its header section only; ``visible``: the header
    lines a mail client printed into an inline forward (no Received chain); ``feedback``: only
    the fields of an ARF feedback report.
    """

    completeness: Completeness
    return_path: str | None = None
    sender: Address | None = None
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    delivered_to: tuple[str, ...] = ()
    x_original_to: tuple[str, ...] = ()
    date: datetime | None = None
    date_text: str | None = None
    message_id: str | None = None
    subject: str | None = None
    received: tuple[Hop, ...] = ()
    authentication_results: tuple[str, ...] = ()
    auth_results: tuple[AuthResult, ...] = ()
    received_spf: tuple[str, ...] = ()
    dkim: tuple[DkimSignature, ...] = ()
    list_unsubscribe: str | None = None

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every recipient address named anywhere, first occurrence first, no duplicates."""
        seen: dict[str, None] = {}
        hops = tuple(h.for_address for h in self.received if h.for_address)
        for address in (*self.to, *self.cc, *self.delivered_to, *self.x_original_to, *hops):
            seen.setdefault(address, None)
        return tuple(seen)


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    """The machine-readable part of an ARF report (RFC 5965 section 3)."""

    feedback_type: str | None
    user_agent: str | None
    version: str | None
    original_mail_from: str | None
    original_rcpt_to: tuple[str, ...]
    arrival_date: datetime | None
    arrival_date_text: str | None
    source_ip: str | None
    reported_domains: tuple[str, ...]
    reported_uris: tuple[str, ...]
    authentication_results: tuple[str, ...]
    auth_failure: str | None
    delivery_result: str | None
    fields: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ReportEnvelope:
    """Facts about the report itself, for checking that the reporter is who it claims."""

    sender: Address | None
    message_id: str | None
    subject: str | None
    authentication_results: tuple[str, ...]
    auth_results: tuple[AuthResult, ...]
    dkim: tuple[DkimSignature, ...]

    @property
    def has_authentication_results(self) -> bool:
        return bool(self.authentication_results)

    @property
    def has_dkim_signature(self) -> bool:
        return bool(self.dkim)


@dataclass(frozen=True, slots=True)
class ReportParse:
    outcome: Outcome
    reason: Reason
    detail: str
    stats: IntakeStats
    envelope: ReportEnvelope | None = None
    original: OriginalMessage | None = None
    feedback: FeedbackReport | None = None
    # How the original was found (the innermost step) and every step from the outside in.
    shape: str | None = None
    path: tuple[str, ...] = ()
    depth: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every recipient of the original: its headers, hops and the ARF envelope recipients."""
        seen: dict[str, None] = dict.fromkeys(self.original.recipients if self.original else ())
        for address in self.feedback.original_rcpt_to if self.feedback else ():
            seen.setdefault(address, None)
        return tuple(seen)


class IntakeStop(Exception):
    """Raised inside the intake to end it with a rejection; never leaves ``parse_report``."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class Budget:
    """The limits of one report and the counters against them, checked as the intake goes."""

    __slots__ = ("_deadline", "limits", "started", "stats")

    def __init__(self, limits: IntakeLimits) -> None:
        self.limits = limits
        self.stats = IntakeStats()
        self.started = time.monotonic()
        self._deadline = self.started + limits.time_budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def tick(self) -> None:
        """Stop the intake once its wall-clock budget is spent."""
        now = time.monotonic()
        self.stats.elapsed_s = now - self.started
        if now >= self._deadline:
            raise IntakeStop(Reason.TIME_BUDGET)

    def part(self, mime_depth: int) -> None:
        self.stats.parts_seen += 1
        self.stats.max_mime_depth_seen = max(self.stats.max_mime_depth_seen, mime_depth)
        if self.stats.parts_seen > self.limits.max_parts:
            raise IntakeStop(Reason.TOO_MANY_PARTS)
        if mime_depth > self.limits.max_mime_depth:
            raise IntakeStop(Reason.MIME_TOO_DEEP)

    def header_section(self, size: int) -> None:
        self.stats.largest_header_section = max(self.stats.largest_header_section, size)
        if size > self.limits.max_header_bytes:
            raise IntakeStop(Reason.HEADERS_TOO_LARGE)

    def may_decode(self, estimate: int) -> bool:
        """Whether a part of about ``estimate`` decoded bytes may be decoded.

        Over the per-part limit: the part is skipped (counted). Over what is left of the
        total: the intake stops, since what it has not read could hold the original.
        """
        if estimate > self.limits.max_part_decoded_bytes:
            self.stats.parts_skipped_oversize += 1
            return False
        if self.stats.decoded_bytes + estimate > self.limits.max_total_decoded_bytes:
            raise IntakeStop(Reason.DECODED_LIMIT)
        return True

    def decoded(self, size: int) -> None:
        self.stats.decoded_bytes += size
        if self.stats.decoded_bytes > self.limits.max_total_decoded_bytes:
            raise IntakeStop(Reason.DECODED_LIMIT)


__all__ = [
    "DETAILS",
    "Address",
    "AuthResult",
    "Budget",
    "Completeness",
    "DkimSignature",
    "FeedbackReport",
    "Hop",
    "IntakeLimits",
    "IntakeStats",
    "IntakeStop",
    "MiB",
    "OriginalMessage",
    "Outcome",
    "Reason",
    "ReportEnvelope",
    "ReportParse",
]
