"""Bounce notices: what the original sender is told when its message bounced or is delayed.

The notice names only the alias the sender wrote to, the status (with plain words for its
RFC 3463 code) and a diagnostic from the report passed through ``safe_diagnostic``: the other
side's real address becomes its alias, its local part, its domain (also inside host names),
every other address not on the relay domain, "host X[ip] said:" and IP addresses are taken
out. The returned message is never passed on. ``build_notice`` checks its own output once
more and drops the diagnostic if any trace of a hidden address were left.
"""

from __future__ import annotations

import email.policy
import re
import textwrap
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime
from typing import TYPE_CHECKING

from mailveil.db.base import utcnow
from mailveil.relay.dsn import KIND_DELAYED, Dsn

if TYPE_CHECKING:
    from mailveil.relay.models import RelayMessage

DIAGNOSTIC_MAX = 300


@dataclass(frozen=True)
class Notice:
    """A message for the smarthost (``delivery.Smarthost``, the relay's pool): envelope sender
    null (RFC 5321 6.1: no bounce loops)."""

    rcpt: str = field(repr=False)  # the original sender's own address
    data: bytes = field(repr=False)
    mail_from: str = ""


# ------------------------------------------------------------------------------ diagnostics

_ADDRESS_LIKE = re.compile(r"[^\s<>()\[\]{},;:\"'`]+@[^\s<>()\[\]{},;:\"'`]+")
_HOST_SAID = re.compile(r"\bhost\s+\S+\s*\[[^\]]*\]\s*(?:said:\s*)?", re.IGNORECASE)
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:.])[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?![\w:])", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_diagnostic(text: str | None, hidden: dict[str, str], relay_domain: str) -> str:
    """A report's diagnostic, fit for the other side of ``hidden`` (real address -> alias).

    Each real address (in any encoding ``Redactor`` knows) becomes its alias; its local part
    and its domain (also as the tail of a host name) are removed; so are any other address
    not on the relay domain, the "host X[ip] said:" preamble and IP addresses. Cut to
    ``DIAGNOSTIC_MAX`` characters only after all that, so no address is ever cut in half.
    """
    if not text:
        return ""
    text = _SPACE.sub(" ", _CONTROL.sub(" ", text))[:4000]
    from mailveil.relay.redact import Redactor

    text = Redactor(hidden).text(text)
    text = _HOST_SAID.sub("", text)
    for real in hidden:
        local, _, domain = real.rpartition("@")
        if len(local) >= 3:
            text = re.sub(
                rf"(?<![\w.+-]){re.escape(local)}(?![\w+-]|\.\w)", "[recipient]", text, flags=re.I
            )
        if domain:
            text = re.sub(
                rf"(?:[\w-]+\.)*{re.escape(domain)}\b", "[recipient domain]", text, flags=re.I
            )
    relay = relay_domain.lower()

    def address(match: re.Match[str]) -> str:
        value = match.group(0)
        domain = value.rpartition("@")[2].lower().rstrip(".")
        return value if domain == relay or domain.endswith("." + relay) else "[address]"

    text = _ADDRESS_LIKE.sub(address, text)
    # IPv6: compressed ("::") or with at least four colons; "12:30:45" is a time, kept.
    text = _IPV6.sub(lambda m: "[ip]" if "::" in m[0] or m[0].count(":") >= 4 else m[0], text)
    text = _IPV4.sub("[ip]", text).strip()
    if len(text) > DIAGNOSTIC_MAX:
        text = text[:DIAGNOSTIC_MAX].rsplit(" ", 1)[0] + " ..."
    return text


_SUBJECTS = {
    "1": "addressing problem",
    "2": "mailbox problem",
    "3": "mail system problem",
    "4": "network or routing problem",
    "5": "mail protocol problem",
    "6": "message content problem",
    "7": "security or policy problem",
}
_DETAILS = {
    "1.1": "the mailbox does not exist",
    "1.2": "the destination domain does not exist",
    "1.3": "the mailbox address is not valid",
    "1.10": "the destination domain does not accept mail",
    "2.1": "the mailbox is disabled",
    "2.2": "the mailbox is full",
    "2.3": "the message is too big for the mailbox",
    "3.4": "the message is too big",
    "4.1": "the receiving server did not answer",
    "4.4": "no route to the receiving server",
    "4.7": "delivery time expired",
    "7.1": "the receiving server refused the message by policy",
    "7.26": "the receiving server could not authenticate the message",
}


def describe_status(status: str | None) -> str:
    """Plain words for an enhanced status code (RFC 3463)."""
    if not status:
        return "no reason given"
    _cls, _, rest = status.partition(".")
    subject = rest.partition(".")[0]
    return _DETAILS.get(rest) or _SUBJECTS.get(subject, "delivery problem")


# ---------------------------------------------------------------------------------- notices


def _notice_text(dsn: Dsn, alias: str, row: RelayMessage, diagnostic: str, marked: bool) -> str:
    sent = row.created_at.strftime("%Y-%m-%d %H:%M UTC") if row.created_at else "unknown"
    if dsn.kind == KIND_DELAYED:
        lead = (
            f"Your message to {alias} has not been delivered yet. The receiving system is "
            "still trying; you do not need to send it again."
        )
    else:
        lead = f"Your message to {alias} could not be delivered."
    lines = [
        lead,
        "",
        f"Status: {dsn.status or 'unknown'} ({describe_status(dsn.status)})",
    ]
    if diagnostic:
        lines.append(f"The receiving system said: {diagnostic}")
    lines += [f"Sent: {sent}", f"Reference: {row.message_id}"]
    if marked:
        lines += [
            "",
            f"Messages to {alias} have failed repeatedly; the address is now marked as not "
            "receiving mail.",
        ]
    lines += ["", "This notice was sent by the marketplace's mail relay."]
    # Short lines keep the body 7bit/8bit (no quoted-printable soft breaks) and readable.
    wrapped = [
        textwrap.fill(line, 76, break_long_words=False, break_on_hyphens=False) or ""
        for line in lines
    ]
    return "\n".join(wrapped) + "\n"


def build_notice(
    *,
    dsn: Dsn,
    alias: str,
    to: str,
    row: RelayMessage,
    hidden: dict[str, str],
    relay_domain: str,
    marked: bool = False,
) -> bytes:
    """The notice's wire bytes (CRLF). ``hidden`` maps the other side's real addresses to the
    alias the sender knows; none of them can be in the result."""
    from mailveil.relay.redact import Redactor
    from mailveil.relay.rewrite import new_message_id

    redactor = Redactor(hidden)
    diagnostic = safe_diagnostic(dsn.diagnostic, hidden, relay_domain)
    for attempt in (diagnostic, ""):
        message = EmailMessage(policy=email.policy.SMTP)
        verb = "Delayed" if dsn.kind == KIND_DELAYED else "Undelivered"
        message["Subject"] = f"{verb}: your message to {alias}"
        message["From"] = f"Mail Delivery System <mailer-daemon@{relay_domain}>"
        message["To"] = to
        message["Date"] = format_datetime(utcnow())
        message["Message-ID"] = new_message_id(relay_domain)
        message["Auto-Submitted"] = "auto-replied"
        message.set_content(_notice_text(dsn, alias, row, attempt, marked))
        data = message.as_bytes()
        text = message.get_content()
        # Belt and braces: the sender's own address is in To; the other side's never is.
        if not redactor.found_bytes(data) and not redactor.found(str(text)):
            return data
    raise AssertionError("a bounce notice without diagnostic still named a hidden address")


__all__ = [
    "DIAGNOSTIC_MAX",
    "Notice",
    "build_notice",
    "describe_status",
    "safe_diagnostic",
]
