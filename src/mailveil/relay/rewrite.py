"""Rewriting a message for the other side: new From, only safe header fields, redacted content.

Both directions (customer → principal and principal → customer) use the same steps:

1. ``From`` becomes the sender's alias (reverse alias for a principal) with the display name
   kept but sanitised (``sanitize_display_name``). No From, or two: refused.
2. Header fields at the top of the message are kept only if listed in ``KEPT_HEADERS``; all
   others are removed. Default-deny, because the fields that identify a sender are open-ended
   (every provider invents its own ``X-`` ones). The notable ones this removes, and why:

   - ``Received``, ``X-Received``, ``X-Originating-IP``, ``X-Forwarded-For``, ``X-Client-IP``:
     the sender's IP address and mail servers.
   - ``Return-Path``, ``Sender``, ``Reply-To``, ``Errors-To``, ``Resent-*``, ``X-Sender``,
     ``X-Envelope-From``, ``Delivered-To``, ``X-Original-To``, ``Bcc``: addresses of the sender
     (or of other people); replies must go to the alias in ``From``.
   - ``Disposition-Notification-To``, ``Return-Receipt-To``, ``X-Confirm-Reading-To``:
     read receipts would be sent straight to the sender's real address.
   - ``X-Mailer``, ``User-Agent``, ``X-MimeOLE``, ``Organization``, ``X-Face``, ``Face``:
     the sender's software, employer or picture: fingerprints.
   - ``Autocrypt``, ``OpenPGP``: carry the real address and a key bound to it.
   - ``DKIM-Signature``, ``ARC-*``, ``Authentication-Results``, ``Received-SPF``: results and
     signatures from outside; they name the sender's domain and no longer verify after the
     rewrite. The relay signs again with its own key.
   - ``List-Unsubscribe``, ``List-*``: ``mailto:`` links to the sender. Kept only when it is
     the relay's own one-click endpoint (``https://<relay domain>/unsubscribe/<token>``, with
     ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``, RFC 8058), which mailveil's
     notifications write.
   - provider fields (``X-MS-*``, ``X-Google-*``, ``X-Gm-*``, ``X-Yahoo-*``, ``X-Apple-*``...):
     account identifiers and client details.

3. ``To`` and ``Cc`` keep only relay-domain addresses (the other side's alias): any other
   address there is someone's real address. ``Message-ID`` is replaced by one on the relay
   domain (the caller may pass it, to map replies); ``Date`` is kept as the same instant in UTC
   so the sender's time zone does not show.
4. Every real address given in ``redactions``, and every mailbox on ``hidden_domains``, is
   replaced by the sender's alias everywhere a reader could see it (``redact.redact_message``);
   a part where that cannot be done is refused with a reply naming it. The output is checked
   once more for any trace in its bytes.
"""

from __future__ import annotations

import datetime as dt
import email.errors
import email.policy
import email.utils
import re
import secrets
import unicodedata
from collections.abc import Iterable, Mapping
from email._header_value_parser import SPECIALS as _SPECIALS
from email._header_value_parser import quote_string as _quote_string
from email.headerregistry import Address, DateHeader
from email.message import EmailMessage

from mailveil.relay.errors import DuplicateFrom, MalformedMessage, MissingFrom, RelayRefusal
from mailveil.relay.parse import POLICY, SMTP_POLICY, header_text
from mailveil.relay.redact import Redactor, clean_header_value, decode_words, redact_message
from mailveil.relay.smuggling import canonical_crlf

KEPT_HEADERS = frozenset(
    {
        "subject",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-language",
        "content-id",
        "content-description",
        "keywords",
        "comments",
        "importance",
        "priority",
        "x-priority",
        "sensitivity",
        "auto-submitted",
        "precedence",
        "thread-topic",
    }
)
# Written by the rewriter itself, from what it parsed.
_REWRITTEN = ("from", "to", "cc", "date", "message-id")
DISPLAY_NAME_MAX = 64

_ADDRESS_TOKEN = re.compile(r"\S*@\S*")
_DROPPED_CHARS = str.maketrans({c: " " for c in '"<>\\'})
_UNFOLD = re.compile(r"\r?\n(?=[ \t])")


def sanitize_display_name(
    name: str, redactor: Redactor | None = None, max_length: int = DISPLAY_NAME_MAX
) -> str:
    """A display name safe to show: no line breaks (refused), controls, quotes, brackets,
    address-like words or real addresses in any encoding; whitespace collapsed; capped."""
    # Decoded first: a name holding encoded-word text would be decoded again by the reader.
    name = clean_header_value(decode_words(name))
    if redactor is not None:
        name = redactor.strip(name)
    name = _ADDRESS_TOKEN.sub(" ", name)
    name = "".join(
        " " if unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"} else char
        for char in name
    )
    name = " ".join(name.translate(_DROPPED_CHARS).replace("=?", " ").split())
    return name[:max_length].strip()


def _single_from(message: EmailMessage) -> str:
    # raw_items, not get_all: parsing a hostile From would fail before we could name why.
    values = [str(value) for name, value in message.raw_items() if name.lower() == "from"]
    if not values:
        raise MissingFrom("no From header field")
    if len(values) > 1:
        raise DuplicateFrom(f"{len(values)} From header fields")
    return _UNFOLD.sub("", header_text(values[0]))


def _display_name(raw_from: str) -> str:
    decoded = decode_words(raw_from)
    clean_header_value(decoded)  # Refuses a line break smuggled in through an encoded-word.
    try:
        header = POLICY.header_factory("From", raw_from)
        addresses = getattr(header, "addresses", ())
        if addresses:
            return str(addresses[0].display_name)
    except Exception:  # noqa: S110 - the registry's parser can fail on junk; fall back below.
        pass
    names = email.utils.getaddresses([decoded])
    return names[0][0] if names else ""


def _on_domain(address: str, relay_domain: str) -> bool:
    domain = address.rpartition("@")[2].lower().rstrip(".")
    relay = relay_domain.lower()
    return domain == relay or domain.endswith("." + relay)


def _relay_recipients(message: EmailMessage, name: str, relay_domain: str) -> list[str]:
    out: list[str] = []
    for _key, raw in message.raw_items():
        if _key.lower() != name:
            continue
        decoded = clean_header_value(decode_words(_UNFOLD.sub("", str(raw))))
        for _, addr in email.utils.getaddresses([decoded]):
            if addr and _on_domain(addr, relay_domain) and addr not in out:
                out.append(addr)
    return out


def sent_at(message: EmailMessage) -> dt.datetime | None:
    """The instant the Date field names (naive for ``-0000``), None when it names none. The
    header registry parsed the field when it was read (``DateHeader.datetime``); its text is
    that instant formatted again, so parsing the text would give the same instant."""
    raw = message.get("Date")
    if not raw:
        return None
    if isinstance(raw, DateHeader):
        return raw.datetime
    try:
        return email.utils.parsedate_to_datetime(str(raw))
    except (TypeError, ValueError, IndexError):
        return None


def _utc_date(message: EmailMessage) -> str:
    when = sent_at(message)
    if when is None or when.tzinfo is None:
        when = dt.datetime.now(dt.UTC)
    # "+0000", as the header registry writes a UTC date back (not "GMT").
    return email.utils.format_datetime(when.astimezone(dt.UTC))


_OWN_LINE = 78  # a field that fits on one line is written as is (RFC 5322's SHOULD)


def _as_written(name: str, text: str) -> bool:
    """Whether ``text`` is stored as written (``set_own``): short plain ASCII on one line."""
    return (
        bool(text)
        and text.isascii()
        and len(name) + 2 + len(text) <= _OWN_LINE
        and text == text.strip()
        and not any(c in text for c in "\r\n\t")
    )


def set_own(message: EmailMessage, name: str, value: str | Address) -> None:
    """Add one of the rewriter's own fields (From, To, Cc, Date, Message-ID).

    Short plain ASCII text is stored as written: the header registry would parse it only to
    fold it back to the same line (``test_relay_rewrite`` holds us to that). Anything else (a
    non-ASCII display name needing encoded-words, a line to fold) goes through the registry."""
    text = str(value)
    if _as_written(name, text):
        message.set_raw(name, text)
    else:
        message[name] = value


_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


def from_field(display_name: str, addr_spec: str) -> str | Address:
    """The From value for ``set_own``: ``Address(display_name, addr_spec)``, or, when
    ``set_own`` would store it as written anyway, the text ``str()`` of that Address gives,
    without building it (its constructor runs the header parser on the address). Only for a
    plain dot-atom address (an alias), which the Address would give back unchanged."""
    if display_name.isascii() and _PLAIN_ADDRESS.fullmatch(addr_spec):
        shown = display_name
        if not _SPECIALS.isdisjoint(shown):
            shown = _quote_string(shown)
        text = f"{shown} <{addr_spec}>" if shown else addr_spec
        if _as_written("From", text):
            return text
    return Address(display_name=display_name, addr_spec=addr_spec)


def new_message_id(relay_domain: str) -> str:
    return f"<{secrets.token_hex(16)}@{relay_domain}>"


def rewrite(
    message: EmailMessage,
    *,
    from_alias: str,
    redactions: Mapping[str, str],
    relay_domain: str,
    message_id: str | None = None,
    hidden_domains: Iterable[str] = (),
) -> bytes:
    """Rewrite ``message`` in place as the module docstring says; return its wire bytes (CRLF,
    not dot-stuffed). Raises a ``RelayRefusal`` subclass, never anything else."""
    redactor = Redactor(
        redactions,
        domains={domain: from_alias for domain in hidden_domains},
        keep_domain=relay_domain,
    )
    try:
        return _rewrite(message, from_alias, redactor, relay_domain, message_id)
    except RelayRefusal:
        raise
    except (
        LookupError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        email.errors.MessageError,
    ) as exc:
        # The stdlib can still trip over a hostile message; refuse it rather than crash.
        raise MalformedMessage(f"message could not be rewritten: {type(exc).__name__}") from exc


def _own_unsubscribe(message: EmailMessage, relay_domain: str) -> list[tuple[str, str]]:
    """The relay's own one-click unsubscribe (RFC 8058, written by mailveil's notifications:
    an opaque token on the relay domain, no address), kept when it is exactly that."""

    def values(name: str) -> list[str]:
        return [
            _UNFOLD.sub("", str(v)).strip() for k, v in message.raw_items() if k.lower() == name
        ]

    link, post = values("list-unsubscribe"), values("list-unsubscribe-post")
    own = re.compile(rf"<https://{re.escape(relay_domain)}/unsubscribe/[a-z2-7]{{1,64}}>")
    if len(link) != 1 or not own.fullmatch(link[0]) or post not in ([], [_ONE_CLICK]):
        return []
    return [("List-Unsubscribe", link[0])] + [("List-Unsubscribe-Post", p) for p in post]


_ONE_CLICK = "List-Unsubscribe=One-Click"


def _rewrite(
    message: EmailMessage,
    from_alias: str,
    redactor: Redactor,
    relay_domain: str,
    message_id: str | None,
) -> bytes:
    name = sanitize_display_name(_display_name(_single_from(message)), redactor)
    to = _relay_recipients(message, "to", relay_domain)
    cc = _relay_recipients(message, "cc", relay_domain)
    date = _utc_date(message)

    kept = [(k, v) for k, v in message.raw_items() if k.lower() in KEPT_HEADERS]
    unsubscribe = _own_unsubscribe(message, relay_domain)
    for key in {k.lower() for k in message}:
        del message[key]
    for key, value in kept:
        message.set_raw(key, value)
    redact_message(message, redactor)

    # The rewriter's own fields go first, in the usual order.
    kept = list(message.raw_items())
    for key in {k.lower() for k in message}:
        del message[key]
    set_own(message, "From", from_field(name, from_alias))
    set_own(message, "To", ", ".join(to) if to else "undisclosed-recipients:;")
    if cc:
        set_own(message, "Cc", ", ".join(cc))
    set_own(message, "Date", date)
    set_own(message, "Message-ID", message_id or new_message_id(relay_domain))
    for key, value in kept:
        message.set_raw(key, value)

    out = canonical_crlf(message.as_bytes(policy=SMTP_POLICY))
    if unsubscribe:
        # Written as they came (one line each, under 998 octets): the generator would fold a
        # long URL into encoded words, which no mailbox provider reads as a link.
        head, sep, body = out.partition(b"\r\n\r\n")
        extra = b"".join(f"{k}: {v}\r\n".encode("ascii") for k, v in unsubscribe)
        out = head + b"\r\n" + extra[:-2] + sep + body
    if redactor.found_bytes(out):
        # Belt and braces: refusing is better than delivering a trace of a real address.
        raise MalformedMessage("redaction could not be verified on the output")
    return out


def rewrite_customer_to_principal(
    message: EmailMessage,
    *,
    customer_alias: str,
    redactions: Mapping[str, str],
    relay_domain: str,
    message_id: str | None = None,
) -> bytes:
    """From becomes the customer's alias for this principal; ``redactions`` maps the
    customer's real address (and any other it must hide) to that alias."""
    return rewrite(
        message,
        from_alias=customer_alias,
        redactions=redactions,
        relay_domain=relay_domain,
        message_id=message_id,
    )


def rewrite_principal_to_customer(
    message: EmailMessage,
    *,
    reverse_alias: str,
    redactions: Mapping[str, str],
    relay_domain: str,
    message_id: str | None = None,
    hidden_domains: Iterable[str] = (),
) -> bytes:
    """From becomes the principal's reverse alias; ``redactions`` maps the principal's real
    sending address (and any other it must hide) to it; every mailbox on ``hidden_domains``
    (the principal's own domains) becomes it too."""
    return rewrite(
        message,
        from_alias=reverse_alias,
        redactions=redactions,
        relay_domain=relay_domain,
        message_id=message_id,
        hidden_domains=hidden_domains,
    )


__all__ = [
    "DISPLAY_NAME_MAX",
    "KEPT_HEADERS",
    "from_field",
    "new_message_id",
    "rewrite",
    "rewrite_customer_to_principal",
    "rewrite_principal_to_customer",
    "sanitize_display_name",
    "sent_at",
    "set_own",
]
