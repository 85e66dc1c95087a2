"""Every SMTP reply the relay sends, named once, with its enhanced status code.

Basic codes follow RFC 5321; enhanced codes follow RFC 3463 and the IANA registry (RFC 5248).
The server and the tests both import these, so a reply's wording changes in one place.
Reply texts never name an address: they may be logged or shown to the other side.
"""

from __future__ import annotations

from typing import NamedTuple


class Reply(NamedTuple):
    code: int
    text: str

    def __str__(self) -> str:
        # aiosmtpd handlers return the whole reply line as a string.
        return f"{self.code} {self.text}"

    @property
    def enhanced(self) -> str:
        return self.text.split(" ", 1)[0]

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600


# 2xx: success.
REPLY_OK = Reply(250, "2.0.0 OK")
QUEUED = Reply(250, "2.0.0 Message accepted")
SENDER_OK = Reply(250, "2.1.0 Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5 Recipient OK")
AUTH_SUCCEEDED = Reply(235, "2.7.0 Authentication succeeded")
# A stranger's message to an alias, accepted and held (relay.strangers, quarantine mode).
QUARANTINED = Reply(250, "2.7.0 Message accepted and held for review")
# The abuse mailbox: a receipt naming the report's reference and nothing else.
REPORT_RECEIVED = Reply(250, "2.0.0 Report received, thank you (reference R-{id})")
CLOSING = Reply(221, "2.0.0 Bye")
# VRFY confirms nothing about any address (RFC 5321 3.5.3 allows 252).
CANNOT_VRFY = Reply(252, "2.0.0 Cannot verify addresses; send the message and see")

# 3xx: RFC 2034 gives 354 no enhanced code.
START_DATA = Reply(354, "End data with <CR><LF>.<CR><LF>")

# 4xx: try again later; the sender keeps the message.
TEMPORARY_FAILURE = Reply(451, "4.3.0 Temporary system failure, try again later")
NOT_ACCEPTING = Reply(421, "4.3.2 Service shutting down, try again later")
SMARTHOST_UNREACHABLE = Reply(451, "4.4.1 Next hop did not answer, try again later")
CONNECTION_TIMEOUT = Reply(421, "4.4.2 Connection timed out")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3 Too many recipients")
POLICY_TEMPORARY = Reply(450, "4.7.1 Not accepted now, try again later")
# One principal wrote to one customer more than lifecycle_flood_limit times in 24 hours.
TOO_MANY_TO_CUSTOMER = Reply(
    450, "4.7.1 Too many messages to this customer in 24 hours, try again later"
)
# The smarthost answered 4xx: the sender keeps the message and retries (before-queue relay).
NEXT_HOP_DEFERRED = Reply(451, "4.4.0 Next hop deferred the message, try again later")
NEXT_HOP_MAILBOX_BUSY = Reply(
    452, "4.2.2 Recipient mailbox at the next hop is full, try again later"
)
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0 Too many connections, try again later")
TOO_MANY_AUTH_FAILURES = Reply(421, "4.7.0 Too many failed authentication attempts")
# SPF/DKIM/DMARC lookups did not answer (temperror): the sender retries.
SENDER_AUTH_TEMPORARY = Reply(
    451, "4.4.3 Sender authentication could not be completed (DNS), try again later"
)

# 5xx, addressing (X.1.x).
BAD_DESTINATION = Reply(550, "5.1.1 Bad destination mailbox address")
BAD_DESTINATION_SYNTAX = Reply(501, "5.1.3 Bad destination mailbox address syntax")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7 Bad sender mailbox address syntax")
MAILBOX_DISABLED = Reply(550, "5.2.1 Mailbox disabled, not accepting messages")
# The recipient's real address hard-bounced repeatedly (relay.bounces marks it).
RECIPIENT_BOUNCING = Reply(550, "5.2.1 Recipient's address keeps bouncing; not accepting messages")
# The order's conversation is past its contact window (relay.lifecycle); the customer can
# reopen it by writing. The same words for every expired alias, whatever its customer's state.
CONVERSATION_ENDED = Reply(
    550, "5.2.1 This conversation has ended; the customer can reopen it by writing"
)
# A principal with neither a delivery address nor a sending address cannot receive replies.
NO_DELIVERY_ADDRESS = Reply(550, "5.1.1 Recipient has no mailbox configured")

# 5xx, size and limits (X.3.4 "message too big for system"): each limit names itself.
MESSAGE_TOO_BIG = Reply(552, "5.3.4 Message size exceeds fixed maximum message size")
TOO_MANY_HEADERS = Reply(552, "5.3.4 Too many header fields")
HEADER_LINE_TOO_LONG = Reply(552, "5.3.4 Header line too long")
HEADER_SECTION_TOO_BIG = Reply(552, "5.3.4 Header section too big")
MIME_TOO_DEEP = Reply(552, "5.3.4 MIME structure nested too deeply")
TOO_MANY_PARTS = Reply(552, "5.3.4 Too many MIME parts")
ATTACHMENT_TOO_BIG = Reply(552, "5.3.4 Attachment exceeds the maximum attachment size")
# Shapes the stdlib parser is slow on, refused by the pre-scan before it runs (relay/prescan.py).
TOO_MANY_PARAMETERS = Reply(552, "5.3.4 Too many parameters in one header field")
TOO_MANY_PARAMETERS_IN_ALL = Reply(
    552, "5.3.4 Too many Content-Type and Content-Disposition parameters in the message"
)
TOO_MANY_ENCODED_WORDS = Reply(552, "5.3.4 Too many encoded-words in one header field")
TOO_MANY_HEADERS_IN_ALL = Reply(552, "5.3.4 Too many header fields in the message's parts together")
HEADERS_TOO_BIG_IN_ALL = Reply(552, "5.3.4 Header sections of the message's parts too big together")

# 5xx, routing (X.4.x). RFC 5321 6.3: a long Received chain is how a mail loop is detected.
TOO_MANY_RECEIVED = Reply(554, "5.4.6 Too many Received header fields (mail loop)")

# 5xx, protocol (X.5.x).
SYNTAX_ERROR = Reply(501, "5.5.2 Syntax error")
BAD_SEQUENCE = Reply(503, "5.5.1 Bad sequence of commands")
COMMAND_UNRECOGNIZED = Reply(500, "5.5.1 Command not recognized")
COMMAND_TOO_LONG = Reply(500, "5.5.2 Command line too long")
# RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
LINE_TOO_LONG = Reply(500, "5.5.2 Line too long; lines must be at most 1000 octets")
PARAMETER_UNRECOGNIZED = Reply(555, "5.5.4 Parameters not recognized or not implemented")
MECHANISM_UNRECOGNIZED = Reply(504, "5.5.4 Unrecognized authentication type")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1 Already authenticated")
# RFC 5321 2.3.8: only CRLF ends a line. Postfix's smtpd_forbid_bare_newline uses 5.5.2 too.
BARE_LF = Reply(550, "5.5.2 Message refused: bare <LF> received; lines must end with <CR><LF>")
BARE_CR = Reply(550, "5.5.2 Message refused: bare <CR> received; lines must end with <CR><LF>")

# 5xx, content (X.6.x).
BAD_CONTENT = Reply(550, "5.6.0 Message content malformed")
NUL_IN_DATA = Reply(550, "5.6.0 Message refused: NUL character in message data")
MISSING_FROM = Reply(550, "5.6.0 Message has no From header field")
DUPLICATE_FROM = Reply(550, "5.6.0 Message has more than one From header field")
HEADER_NOT_UTF8 = Reply(550, "5.6.0 Header field contains 8-bit data that is not UTF-8")
HEADER_INJECTION = Reply(550, "5.6.0 Header field contains control characters")
NON_ASCII_ADDRESS = Reply(553, "5.6.7 Non-ASCII address requires SMTPUTF8")
# Operator content rules (relay/content_rules.py).
PLAIN_TEXT_ONLY = Reply(550, "5.6.1 Message refused: only plain text messages are accepted")
ATTACHMENT_TYPE_REFUSED = Reply(550, "5.6.1 Message refused: attachment type not allowed")
ATTACHMENT_TYPE_MISMATCH = Reply(
    550, "5.6.1 Message refused: attachment content does not match its declared type"
)

# 5xx, security and policy (X.7.x).
AUTH_REQUIRED = Reply(530, "5.7.0 Authentication required")
STARTTLS_REQUIRED = Reply(530, "5.7.0 Must issue a STARTTLS command first")
NOT_AUTHORIZED = Reply(550, "5.7.1 Delivery not authorized, message refused")
RELAY_DENIED = Reply(550, "5.7.1 Relaying denied: recipient is not on the relay domain")
# Marketplace messaging policy (relay/content_rules.py); each names its rule.
REASON_MISSING = Reply(
    550, "5.7.1 Message refused: no contact reason (X-Contact-Reason header or [reason] subject)"
)
REASON_UNKNOWN = Reply(550, "5.7.1 Message refused: unknown contact reason")
REASON_NOT_ALLOWED = Reply(
    550, "5.7.1 Message refused: contact reason not allowed for the order's status"
)
CUSTOMER_OPTED_OUT = Reply(
    550, "5.7.1 Message refused: the customer opted out of unsolicited seller messages"
)
# A refusal decided by an operator's own Cedar policy (policy_dir) rather than a shipped rule.
MESSAGE_NOT_ALLOWED = Reply(
    550, "5.7.1 Message refused: the marketplace's messaging policy does not allow this message"
)
CONTACT_NOT_ALLOWED = Reply(
    550, "5.7.1 Message refused: the marketplace's contact policy does not allow this contact"
)
EXTERNAL_LINKS = Reply(550, "5.7.1 Message refused: links to external sites are not allowed")
SENDER_SUSPENDED = Reply(550, "5.7.1 Message refused: the sender is suspended")
# RFC 7372: the sender failed SPF/DKIM/DMARC alignment (customer spoofing).
SENDER_NOT_AUTHENTICATED = Reply(
    550, "5.7.26 Message refused: sender could not be authenticated (SPF/DKIM/DMARC)"
)
# The smarthost answered 5xx. Our own wording: its text may name the recipient's address.
NEXT_HOP_NO_MAILBOX = Reply(550, "5.1.1 Recipient mailbox unavailable at the next hop")
NEXT_HOP_MAILBOX_DISABLED = Reply(550, "5.2.1 Recipient mailbox disabled at the next hop")
NEXT_HOP_TOO_BIG = Reply(552, "5.3.4 Message too big for the next hop")
NEXT_HOP_POLICY = Reply(550, "5.7.1 Message refused by the next hop's policy")
NEXT_HOP_REFUSED = Reply(554, "5.0.0 Message refused by the next hop")
# A real address the relay must hide is in a part it cannot rewrite (relay/redact.py). The
# text names the part by number and type (``part_refusal``), never the address.
ADDRESS_IN_SIGNED_PART = Reply(
    550,
    "5.7.1 Message refused: {part} is signed and shows a real email address; "
    "rewriting it would break the signature",
)
ADDRESS_IN_BINARY_PART = Reply(
    550,
    "5.7.1 Message refused: {part} is binary and holds a real email address; "
    "rewriting it would damage it",
)
ADDRESS_IN_OPENPGP = Reply(
    550,
    "5.7.1 Message refused: {part} holds an OpenPGP key, signature or signed text "
    "naming a real email address; it cannot be rewritten",
)
ADDRESS_NOT_HIDDEN = Reply(
    550, "5.7.1 Message refused: {part} would still show a real email address after rewriting"
)
# The marketplace's veto hook (relay.veto) refused the message.
VETO_REFUSED = Reply(550, "5.7.1 Message refused by the marketplace's message review")
# The veto hook asked to hold it, or did not answer in time: kept for review, not delivered.
VETO_HELD = Reply(250, "2.7.0 Message accepted and held for the marketplace's review")
AUTH_INVALID = Reply(535, "5.7.8 Authentication credentials invalid")
ENCRYPTION_REQUIRED = Reply(
    538, "5.7.11 Encryption required for requested authentication mechanism"
)


def report_received(report_id: int) -> Reply:
    """``REPORT_RECEIVED`` with the report's reference filled in."""
    return Reply(REPORT_RECEIVED.code, REPORT_RECEIVED.text.format(id=int(report_id)))


def part_refusal(reply: Reply, part: str) -> Reply:
    """One of the ``ADDRESS_IN_*`` / ``ADDRESS_NOT_HIDDEN`` replies naming ``part``."""
    return Reply(reply.code, reply.text.format(part=part))


def report_queued(reference: str) -> Reply:
    """A report taken into the spool while the database was busy: the same receipt, with
    the spool's reference (``Q-...``) instead of a report number."""
    return Reply(REPORT_RECEIVED.code, REPORT_RECEIVED.text.replace("R-{id}", reference))


__all__ = [name for name, value in globals().items() if isinstance(value, Reply)] + [
    "Reply",
    "part_refusal",
    "report_queued",
    "report_received",
]
