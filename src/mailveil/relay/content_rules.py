"""The marketplace's messaging policy for mail from a principal to a customer.

Checked at DATA, after the sender is known to be the principal the alias was disclosed to
(the contact policy in Cedar -- suspended principal, deleted customer, order too old -- is
decided at RCPT from the same facts as a disclosure). Each rule refuses with its own reply
from ``codes``; the content rules are decided here, configured in ``Settings``:

Contact reason and opt-out (Cedar: action ``message``, shipped in ``messages.cedar``)
    Every message names why it is sent: an ``X-Contact-Reason`` header, or a ``[reason]``
    prefix on the subject (the header wins). ``decide_message`` gives Cedar the facts --
    the reason, whether the operator listed it (``relay_reasons_by_status``,
    ``relay_critical_reasons``, ``relay_employee_reasons``), whether it is critical, the
    reasons allowed for the status of the latest order of this customer with this seller
    (employees and services: the employee reasons), whether the message replies in a thread
    the customer started -- and the runtime's ``PolicyEngine`` decides, memoised, so an
    operator changes the rules with ``.cedar`` files in ``policy_dir``. The shipped rules: a
    reason must be listed (``REASON_UNKNOWN``) and allowed for the order's status or the
    principal's kind (``REASON_NOT_ALLOWED``) unless critical (a safety recall, a legal
    notice, a refund); a message without a reason is accepted only as a reply in an
    existing thread (recorded as reason ``reply``), else refused (``REASON_MISSING``); the
    customer's ``seller_unsolicited`` opt-out refuses sellers (``CUSTOMER_OPTED_OUT``) unless
    the reason is critical or the message replies in a thread: its In-Reply-To/References
    name a Message-ID the relay issued on a message the customer sent to this seller
    (``messages.thread_exists``; the seller's own earlier messages do not count). Each
    refusal gets the reply of the policy that decided it (``REPLY_BY_POLICY``).
Plain text only (``relay_plain_text_only``)
    Every part must be text/plain: no HTML, no attachments (``PLAIN_TEXT_ONLY``).
External links (``relay_forbid_external_links``, ``relay_link_allowlist``)
    No link in any text part (URLs, ``www.`` names, HTML ``href``/``src``, after HTML entity
    decoding) may point to a host other than the relay domain or an allowlisted host or one of
    its subdomains (``EXTERNAL_LINKS``).
Attachments (``relay_attachment_types``, ``relay_max_attachment_bytes``)
    Any part that is not a body text part (has a file name, is marked attachment, or is not
    text/*) must have an allowed media type (``ATTACHMENT_TYPE_REFUSED``), content that looks
    like that type where the type has a signature (PDF, PNG, JPEG, GIF;
    ``ATTACHMENT_TYPE_MISMATCH``) and at most the maximum size once decoded
    (``ATTACHMENT_TOO_BIG``). A forwarded message (message/rfc822) counts as an attachment of
    that type.
"""

from __future__ import annotations

import email.errors
import functools
import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage, Message

# The settings module itself, not the package: config.checks validates with this module,
# and the package imports config.checks.
from mailveil.config.settings import Settings, SettingsError
from mailveil.contacts.models import status_clauses
from mailveil.policy import facts
from mailveil.policy.engine import ACTION_MESSAGE, Decision, PolicyEngine, PolicyInput
from mailveil.relay import codes
from mailveil.relay.codes import Reply
from mailveil.relay.errors import RelayRefusal
from mailveil.relay.parse import header_text, walk_with_depth
from mailveil.relay.redact import decode_words

OPT_OUT_SELLER_UNSOLICITED = "seller_unsolicited"
REASON_HEADER = "X-Contact-Reason"
REPLY_REASON = "reply"  # what the ledger records for an untagged reply in a thread
# The reply for each shipped forbid in messages.cedar, in precedence order when several
# hold. A refusal that no forbid decided (nothing permits) is REASON_NOT_ALLOWED; one decided
# only by forbids of the operator's own gets MESSAGE_NOT_ALLOWED.
REPLY_BY_POLICY: dict[str, Reply] = {
    "message-reason-missing": codes.REASON_MISSING,
    "message-reason-unknown": codes.REASON_UNKNOWN,
    "message-customer-opted-out": codes.CUSTOMER_OPTED_OUT,
}

_SLUG = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_SUBJECT_TAG = re.compile(r"^\s*\[\s*([A-Za-z][A-Za-z0-9_-]{0,62})\s*\]")
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,250}>")
_URL = re.compile(
    r"""(?ix)
    (?:\b[a-z][a-z0-9+.-]{1,20}:)?//     # scheme:// or protocol-relative //
    (?:[^\s/?#@<>"'\\]*@)?               # user info
    ([^\s/?#:<>"'\\\]\[)(]+)             # host
    | \bwww\.([a-z0-9.-]+)
    """
)
# Media types with a reliable leading signature: the declared type must match the bytes.
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}
_LINK_SCHEMES_IGNORED = ("mailto", "cid", "tel", "data")


class PolicyRefusal(RelayRefusal):
    code = "policy-refused"
    reply = codes.NOT_AUTHORIZED

    def __init__(
        self, detail: str = "", *, reply: Reply | None = None, policies: tuple[str, ...] = ()
    ) -> None:
        super().__init__(detail, reply=reply)
        self.policies = policies  # the @id of the Cedar policies that decided, if any


def _slugs(text: str, what: str) -> frozenset[str]:
    out = set()
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if not _SLUG.match(item):
            raise SettingsError(f"{what}: {item!r} is not a reason name (a-z, 0-9, _)")
        out.add(item)
    return frozenset(out)


def parse_reasons_by_status(text: str) -> dict[str, frozenset[str]]:
    """``"placed=a,b; shipped=c"`` -> {"placed": {"a", "b"}, "shipped": {"c"}}."""
    out: dict[str, frozenset[str]] = {}
    clauses = status_clauses(text, "relay_reasons_by_status", "status=reason,...", ";")
    for status, reasons in clauses:
        out[status] = out.get(status, frozenset()) | _slugs(reasons, "relay_reasons_by_status")
    return out


def _media_types(text: str) -> frozenset[str]:
    out = set()
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item.count("/") != 1:
            raise SettingsError(f"relay_attachment_types: {item!r} is not a media type")
        out.add(item)
    return frozenset(out)


def _hosts(text: str) -> frozenset[str]:
    return frozenset(h.strip().lower().strip(".") for h in text.split(",") if h.strip())


@dataclass(frozen=True, eq=False)
class MessagingPolicy:
    reasons_by_status: Mapping[str, frozenset[str]]
    critical_reasons: frozenset[str]
    employee_reasons: frozenset[str]
    service_reasons: frozenset[str]
    plain_text_only: bool
    forbid_external_links: bool
    link_allowlist: frozenset[str]
    attachment_types: frozenset[str]
    max_attachment_bytes: int
    # Per-request lookups, computed once: the Cedar context is built for every message.
    _allowed: dict[tuple[str, str | None], tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> MessagingPolicy:
        """Parse the policy settings; SettingsError names the first bad one."""
        if settings.relay_max_attachment_bytes < 0:
            raise SettingsError("relay_max_attachment_bytes must be >= 0")
        return cls(
            reasons_by_status=parse_reasons_by_status(settings.relay_reasons_by_status),
            critical_reasons=_slugs(settings.relay_critical_reasons, "relay_critical_reasons"),
            employee_reasons=_slugs(settings.relay_employee_reasons, "relay_employee_reasons"),
            service_reasons=_slugs(settings.relay_service_reasons, "relay_service_reasons"),
            plain_text_only=settings.relay_plain_text_only,
            forbid_external_links=settings.relay_forbid_external_links,
            link_allowlist=_hosts(settings.relay_link_allowlist) | {settings.relay_domain.lower()},
            attachment_types=_media_types(settings.relay_attachment_types),
            max_attachment_bytes=settings.relay_max_attachment_bytes,
        )

    @functools.cached_property
    def known_reasons(self) -> frozenset[str]:
        known = self.critical_reasons | self.employee_reasons | self.service_reasons
        for reasons in self.reasons_by_status.values():
            known |= reasons
        return known

    def allowed_reasons(self, principal_kind: str, order_status: str | None) -> tuple[str, ...]:
        """The reasons this kind of principal may give (sellers: for the order's status)."""
        key = (principal_kind, order_status if principal_kind == "seller" else None)
        found = self._allowed.get(key)
        if found is None:
            if principal_kind == "seller":
                reasons = self.reasons_by_status.get(order_status or "", frozenset())
            elif principal_kind == "service":
                reasons = self.service_reasons
            else:
                reasons = self.employee_reasons
            found = self._allowed[key] = tuple(sorted(reasons))
        return found


# -- contact reason ----------------------------------------------------------------------


def _raw_header(message: Message, name: str) -> str | None:
    lowered = name.lower()
    for key, value in message.raw_items():
        if key.lower() == lowered:
            return header_text(str(value))
    return None


def contact_reason(message: Message) -> str | None:
    """The reason the sender gave (lowercased, ``-`` read as ``_``), or None."""
    raw = _raw_header(message, REASON_HEADER)
    if raw is not None and raw.strip():
        return raw.strip().lower().replace("-", "_")
    subject = _raw_header(message, "Subject")
    if subject:
        match = _SUBJECT_TAG.match(decode_words(subject))
        if match:
            return match.group(1).lower().replace("-", "_")
    return None


def referenced_ids(message: Message) -> list[str]:
    """Message-IDs named by In-Reply-To and References, most recent last."""
    out: list[str] = []
    for name in ("In-Reply-To", "References"):
        raw = _raw_header(message, name)
        if raw:
            out.extend(_MESSAGE_ID.findall(raw))
    return out


def message_input(
    policy: MessagingPolicy,
    contact: PolicyInput,
    *,
    reason: str,
    order_status: str | None,
    in_thread: bool,
) -> PolicyInput:
    """The Cedar input for action ``message``, built by ``policy.facts.message_input`` from
    what the messaging settings say of ``reason`` for this principal kind and order status."""
    kind = contact.principal_type.lower()
    return facts.message_input(
        contact,
        allowed_reasons=policy.allowed_reasons(kind, order_status),
        critical=reason in policy.critical_reasons,
        known=reason in policy.known_reasons,
        in_thread=in_thread,
        reason=reason,
        order_status=order_status,
    )


def reply_for(decision: Decision) -> Reply:
    """The SMTP reply for a refusal, from the @id of the policies that decided it."""
    if not decision.policy_ids:
        return codes.REASON_NOT_ALLOWED
    for ident, reply in REPLY_BY_POLICY.items():
        if ident in decision.policy_ids:
            return reply
    return codes.MESSAGE_NOT_ALLOWED


def decide_message(
    engine: PolicyEngine,
    policy: MessagingPolicy,
    contact: PolicyInput,
    *,
    reason: str | None,
    order_status: str | None,
    references: bool,
    in_thread: Callable[[], bool],
) -> str:
    """The reason to record, or a ``PolicyRefusal`` with the deciding policy's reply.

    ``in_thread`` is a database lookup: called only when the message references earlier
    ones and the decision with it differs from the one without it (both memoised)."""
    kind = contact.principal_type.lower()
    if reason is not None and not _SLUG.match(reason):
        # Not a reason name at all (a header's free text): never a Cedar string or memo key.
        raise PolicyRefusal(
            "the contact reason is not a reason name",
            reply=unknown_reason_reply(policy, kind, order_status),
        )
    text = reason or ""

    def inp(thread: bool) -> PolicyInput:
        return message_input(
            policy, contact, reason=text, order_status=order_status, in_thread=thread
        )

    if references:
        outside, inside = engine.decide_many([inp(False), inp(True)])
        same = (outside.allowed, outside.policy_ids) == (inside.allowed, inside.policy_ids)
        decision = outside if same or not in_thread() else inside
    else:
        decision = engine.decide(inp(False))
    if decision.allowed:
        return text or REPLY_REASON
    reply = reply_for(decision)
    if reply is codes.REASON_UNKNOWN:
        reply = unknown_reason_reply(policy, kind, order_status)
    raise PolicyRefusal(decision.reason, reply=reply, policies=decision.policy_ids)


def unknown_reason_reply(policy: MessagingPolicy, kind: str, order_status: str | None) -> Reply:
    """``REASON_UNKNOWN`` naming the reasons this sender may give here (its kind's, for a
    seller the order status's, and the critical ones), so the sender can correct the tag."""
    allowed = sorted(set(policy.allowed_reasons(kind, order_status)) | policy.critical_reasons)
    listed = ", ".join(allowed) if allowed else "none"
    return Reply(codes.REASON_UNKNOWN.code, f"{codes.REASON_UNKNOWN.text}; allowed: {listed}")


# -- content -----------------------------------------------------------------------------


def _is_attachment(part: Message, maintype: str) -> bool:
    if maintype != "text" or part.get_content_disposition() == "attachment":
        return True
    return part.get_filename() is not None


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _text(part: Message, payload: bytes) -> str:
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("latin-1")


def _host_allowed(host: str, allowlist: frozenset[str]) -> bool:
    host = host.lower().strip(".")
    return any(host == allowed or host.endswith("." + allowed) for allowed in allowlist)


def external_links(text: str, allowlist: frozenset[str]) -> list[str]:
    """Hosts of links in ``text`` (plain or HTML) that are not on the allowlist."""
    found = []
    for match in _URL.finditer(html.unescape(text)):
        whole = match.group(0).lower()
        if whole.split(":", 1)[0] in _LINK_SCHEMES_IGNORED:
            continue
        host = match.group(1) or f"www.{match.group(2)}"
        if host and not _host_allowed(host, allowlist):
            found.append(host.lower())
    return found


def check_content(policy: MessagingPolicy, message: EmailMessage) -> None:
    """The operator's content rules (module docstring), or a ``PolicyRefusal``."""
    try:
        _check_content(policy, message)
    except RelayRefusal:
        raise
    except (LookupError, ValueError, TypeError, email.errors.MessageError) as exc:
        raise PolicyRefusal(
            f"content could not be checked: {type(exc).__name__}", reply=codes.BAD_CONTENT
        ) from exc


def _check_content(policy: MessagingPolicy, message: EmailMessage) -> None:
    for part, depth in walk_with_depth(message):
        ctype = part.get_content_type()  # parsed once per part: header parsing is the cost
        maintype = ctype.partition("/")[0]
        if maintype == "multipart":
            continue
        attachment = _is_attachment(part, maintype)
        if depth and attachment:
            if policy.plain_text_only:
                raise PolicyRefusal(
                    "attachment in a plain-text-only relay", reply=codes.PLAIN_TEXT_ONLY
                )
            _check_attachment(policy, part, ctype)
            if maintype == "message":
                continue
        elif policy.plain_text_only and ctype != "text/plain":
            raise PolicyRefusal(f"{ctype} part", reply=codes.PLAIN_TEXT_ONLY)
        elif depth == 0 and attachment:
            # A whole message that is one non-text entity (e.g. Content-Type: application/pdf).
            _check_attachment(policy, part, ctype)
        if policy.forbid_external_links and maintype == "text":
            hosts = external_links(_text(part, _payload(part)), policy.link_allowlist)
            if hosts:
                raise PolicyRefusal(f"{len(hosts)} external link(s)", reply=codes.EXTERNAL_LINKS)


def _check_attachment(policy: MessagingPolicy, part: Message, ctype: str) -> None:
    if ctype not in policy.attachment_types:
        raise PolicyRefusal(f"attachment of type {ctype}", reply=codes.ATTACHMENT_TYPE_REFUSED)
    if ctype.startswith("message/"):
        return
    payload = _payload(part)
    if len(payload) > policy.max_attachment_bytes:
        raise PolicyRefusal(f"attachment of {len(payload)} bytes", reply=codes.ATTACHMENT_TOO_BIG)
    signatures = _SIGNATURES.get(ctype)
    if signatures and not payload.startswith(signatures):
        raise PolicyRefusal(
            f"attachment declared {ctype} does not look like one",
            reply=codes.ATTACHMENT_TYPE_MISMATCH,
        )


__all__ = [
    "ACTION_MESSAGE",
    "OPT_OUT_SELLER_UNSOLICITED",
    "REASON_HEADER",
    "REPLY_BY_POLICY",
    "REPLY_REASON",
    "MessagingPolicy",
    "PolicyRefusal",
    "check_content",
    "contact_reason",
    "decide_message",
    "external_links",
    "message_input",
    "parse_reasons_by_status",
    "referenced_ids",
    "reply_for",
]
