"""Issue 11's shapes of a hidden address, each through the real relay, with the outcome each
must have; and benign look-alike mail, which must arrive text-identical.

Of the 44 shapes the issue tried, 16 reached the other side readable (``leaked=True`` here);
each must now be redacted or refused. The side channels peers' users found (OpenPGP keys and
signatures, vCards, calendar invitations and replies, To/Cc of quoted or resent mail) and the
other direction (a seller's address in mail to a customer) are in the same table. The table of
outcomes is printed; the judge is ``leak_oracle.shown`` (written apart from the relay's code).
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from hiding_kit import (
    Customer,
    add_customer,
    folded,
    leaf,
    multipart,
    pgp_public_key,
    pgp_signature,
    rfc822,
    send_to_customer,
    send_to_seller,
    top,
)
from leak_oracle import shown
from relay_server_kit import SELLER_ADDRESS, SELLER_OTHER_ADDRESS, Relay
from rich.console import Console
from rich.table import Table

from mailveil.relay import codes

REDACTED = "redacted"


def _entities(text: str, hexa: bool) -> str:
    return "".join(f"&#x{ord(c):X};" if hexa else f"&#{ord(c)};" for c in text)


def _split(address: str, between: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local}{between}@{domain}"


def _html(body: str) -> bytes:
    return leaf("text/html", f"<html><body><p>Hello,</p><p>{body}</p></body></html>")


def _text(body: str, cte: str = "8bit", charset: str = "utf-8") -> bytes:
    return leaf("text/plain", f"Hello,\n{body}\nThanks\n", cte=cte, charset=charset)


def _calendar(address: str, fold_at: int) -> bytes:
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "METHOD:REPLY",
        "BEGIN:VEVENT",
        "UID:1@client.example",
        folded(f"ATTENDEE;PARTSTAT=ACCEPTED;CN=Ada:mailto:{address}", fold_at),
        f"ORGANIZER;CN=Shop:mailto:{SELLER_ADDRESS}",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return leaf("text/calendar", "\r\n".join(lines) + "\r\n", headers="")


def _vcard(address: str, fold_at: int | None) -> bytes:
    line = f"EMAIL;TYPE=INTERNET:{address}"
    card = ["BEGIN:VCARD", "VERSION:3.0", "FN:Ada", folded(line, fold_at) if fold_at else line]
    return leaf("text/vcard", "\r\n".join([*card, "END:VCARD"]) + "\r\n")


def _forwarded(address: str, field: str) -> bytes:
    inner = top(
        "Shop <shop@relay.example>",
        "someone@example.org",
        "Your order",
        leaf("text/plain", "Your parcel left.\n"),
        headers=f"{field}: Ada <{address}>\r\n",
    )
    return multipart("mixed", _text("see below"), rfc822(inner))


def _signed(address: str) -> bytes:
    signed_text = leaf("text/plain", f"Write to me at {address}\n", cte="quoted-printable")
    signature = leaf(
        "application/pgp-signature", pgp_signature("Ada <ada@pgp.example>"), charset=None
    )
    return multipart(
        "signed", signed_text, signature, params='; protocol="application/pgp-signature"'
    )


LEAKED, WAS_REDACTED, SIDE = "leaked", "redacted", "side channel"


def _attached(filename_param: str) -> bytes:
    """A text with a text attachment whose Content-Disposition carries ``filename_param``."""
    disposition = f"Content-Disposition: attachment; {filename_param}\r\n"
    return multipart(
        "mixed", _text("see attached"), leaf("text/plain", "notes\n", headers=disposition)
    )


@dataclass(frozen=True)
class Shape:
    name: str
    origin: str  # in the issue: LEAKED (reached the other side) or WAS_REDACTED; or SIDE
    build: Callable[[str], bytes]  # the hidden address -> the MIME entity
    expect: str | codes.Reply = REDACTED
    subject: Callable[[str], str] | None = None
    headers: Callable[[str], str] | None = None  # extra top-level fields


SHAPES: list[Shape] = [
    # --- the 16 that leaked: markup that renders as the plain address
    Shape("empty <span>", LEAKED, lambda a: _html(_split(a, "<span></span>"))),
    Shape("empty <b>", LEAKED, lambda a: _html(_split(a, "<b></b>"))),
    Shape("empty <i>", LEAKED, lambda a: _html(_split(a, "<i></i>"))),
    Shape("HTML comment", LEAKED, lambda a: _html(_split(a, "<!-- x -->"))),
    Shape("<wbr>", LEAKED, lambda a: _html(_split(a, "<wbr>"))),
    Shape(
        "split across two elements",
        LEAKED,
        lambda a: _html(f"<span>{a.split('@')[0]}</span><span>@{a.split('@')[1]}</span>"),
    ),
    # invisible characters, as characters and as entities
    Shape("zero-width space", LEAKED, lambda a: _text(a[:3] + "\u200b" + a[3:])),
    Shape("word joiner", LEAKED, lambda a: _text(_split(a, "\u2060"))),
    Shape("soft hyphen", LEAKED, lambda a: _text(a[:4] + "\u00ad" + a[4:])),
    Shape("zero-width space entity", LEAKED, lambda a: _html(a[:3] + "&#8203;" + a[3:])),
    Shape("word joiner entity", LEAKED, lambda a: _html(_split(a, "&NoBreak;"))),
    Shape("soft hyphen entity", LEAKED, lambda a: _html(a[:4] + "&shy;" + a[4:])),
    Shape("sub-address tag", LEAKED, lambda a: _text(_split(a, "+news"))),
    Shape("fullwidth at sign", LEAKED, lambda a: _text(a.replace("@", "\uff20"))),
    Shape("calendar line folded inside", LEAKED, lambda a: _calendar(a, 43)),
    Shape("decimal entities, mixed case", LEAKED, lambda a: _html(_entities(a, hexa=False))),
    Shape("hex entities, mixed case", LEAKED, lambda a: _html(_entities(a, hexa=True))),
    # --- the 28 redacted before: encodings, entities, encoded-words, names, nesting, headers
    Shape("plain text", WAS_REDACTED, lambda a: _text(a)),
    Shape("upper case", WAS_REDACTED, lambda a: _text(a.upper())),
    Shape("quoted-printable", WAS_REDACTED, lambda a: _text(a, cte="quoted-printable")),
    Shape("base64", WAS_REDACTED, lambda a: _text(a, cte="base64")),
    Shape(
        "iso-8859-1 charset",
        WAS_REDACTED,
        lambda a: _text(f"Gr\u00fc\u00dfe {a}", charset="latin-1"),
    ),
    Shape("utf-16 charset", WAS_REDACTED, lambda a: _text(a, cte="base64", charset="utf-16")),
    Shape("percent-encoded", WAS_REDACTED, lambda a: _text(urllib.parse.quote(a, safe=""))),
    Shape("&#64; entity", WAS_REDACTED, lambda a: _html(a.replace("@", "&#64;"))),
    Shape("&commat; entity", WAS_REDACTED, lambda a: _html(a.replace("@", "&commat;"))),
    Shape(
        "mailto link percent-encoded",
        WAS_REDACTED,
        lambda a: _html(f'<a href="mailto:{urllib.parse.quote(a)}">write</a>'),
    ),
    Shape("alt text", WAS_REDACTED, lambda a: _html(f'<img src="cid:x" alt="{a}">')),
    Shape("quoted reply", WAS_REDACTED, lambda a: _text(f"> On Monday Ada <{a}> wrote:\n> hi")),
    Shape(
        "multipart/alternative",
        WAS_REDACTED,
        lambda a: multipart("alternative", _text(a), _html(a)),
    ),
    Shape(
        "RFC 2231 file name",
        WAS_REDACTED,
        lambda a: _attached("filename*=utf-8''" + urllib.parse.quote(a + ".txt", safe="")),
    ),
    Shape(
        "RFC 2047 file name",
        WAS_REDACTED,
        lambda a: _attached(f'filename="=?utf-8?b?{base64.b64encode(a.encode()).decode()}?="'),
    ),
    Shape(
        "preamble and epilogue",
        WAS_REDACTED,
        lambda a: (
            multipart("mixed", _text("x")).replace(b"\r\n\r\n", f"\r\n\r\n{a}\r\n".encode(), 1)
            + f"{a}\r\n".encode()
        ),
    ),
    Shape("forwarded To:", WAS_REDACTED, lambda a: _forwarded(a, "To")),
    Shape("forwarded Cc:", WAS_REDACTED, lambda a: _forwarded(a, "Cc")),
    Shape("resent Resent-To:", WAS_REDACTED, lambda a: _forwarded(a, "Resent-To")),
    Shape(
        "nested message body",
        WAS_REDACTED,
        lambda a: rfc822(top("x@relay.example", "y@relay.example", "fwd", _text(a))),
    ),
    Shape("vCard", WAS_REDACTED, lambda a: _vcard(a, None)),
    Shape(
        "subject encoded-word (B)",
        WAS_REDACTED,
        lambda a: _text("hi"),
        subject=lambda a: "=?utf-8?b?" + base64.b64encode(a.encode()).decode() + "?=",
    ),
    Shape(
        "subject encoded-word (Q)",
        WAS_REDACTED,
        lambda a: _text("hi"),
        subject=lambda a: "=?utf-8?q?" + a.replace("@", "=40") + "?=",
    ),
    Shape("subject plain", WAS_REDACTED, lambda a: _text("hi"), subject=lambda a: f"from {a}"),
    Shape("From display name, encoded-word", WAS_REDACTED, lambda a: _text("hi")),
    Shape("Reply-To", WAS_REDACTED, lambda a: _text("hi"), headers=lambda a: f"Reply-To: {a}\r\n"),
    Shape(
        "X-Original-To",
        WAS_REDACTED,
        lambda a: _text("hi"),
        headers=lambda a: f"X-Original-To: {a}\r\n",
    ),
    Shape("Keywords", WAS_REDACTED, lambda a: _text("hi"), headers=lambda a: f"Keywords: {a}\r\n"),
    Shape(
        "Content-Description",
        WAS_REDACTED,
        lambda a: leaf("text/plain", "hi\n", headers=f"Content-Description: {a}\r\n"),
    ),
    # --- side channels and refusals
    Shape("vCard folded inside", SIDE, lambda a: _vcard(a, 25)),
    Shape("calendar ORGANIZER", SIDE, lambda a: _calendar(a, 10)),
    Shape(
        "hidden junk between halves",
        SIDE,
        lambda a: _html(_split(a, '<span style="display:none">junk</span>')),
    ),
    Shape(
        "font-size:0 junk",
        SIDE,
        lambda a: _html(_split(a, '<span style="font-size:0px">junk</span>')),
    ),
    Shape(
        "class hidden by a <style> rule",
        SIDE,
        lambda a: leaf(
            "text/html",
            "<html><head><style>.q{display:none}</style></head><body>"
            + _split(a, '<i class="q">junk</i>')
            + "</body></html>",
        ),
    ),
    Shape(
        "fullwidth letters",
        SIDE,
        lambda a: _text("".join(chr(ord(c) + 0xFEE0) if c.isalpha() else c for c in a)),
    ),
    Shape("ideographic full stop", SIDE, lambda a: _text(a.replace(".", "\u3002"))),
    Shape(
        "OpenPGP key attached",
        SIDE,
        lambda a: multipart(
            "mixed",
            _text("my key"),
            leaf("application/pgp-keys", pgp_public_key(f"Ada <{a}>"), charset=None),
        ),
        expect=codes.ADDRESS_IN_OPENPGP,
    ),
    Shape(
        "OpenPGP key inline",
        SIDE,
        lambda a: _text("my key:\n" + pgp_public_key(f"Ada <{a}>")),
        expect=codes.ADDRESS_IN_OPENPGP,
    ),
    Shape("signed text", SIDE, _signed, expect=codes.ADDRESS_IN_SIGNED_PART),
    Shape(
        "binary attachment",
        SIDE,
        lambda a: multipart(
            "mixed",
            _text("invoice attached"),
            leaf(
                "application/pdf",
                b"%PDF-1.4 /Author (" + a.encode() + b")",
                cte="base64",
                charset=None,
            ),
        ),
        expect=codes.ADDRESS_IN_BINARY_PART,
    ),
]


REFUSALS = {
    name: getattr(codes, name)
    for name in (
        "ADDRESS_IN_SIGNED_PART",
        "ADDRESS_IN_BINARY_PART",
        "ADDRESS_IN_OPENPGP",
        "ADDRESS_NOT_HIDDEN",
    )
}


def _refusal_name(text: str) -> str:
    """Which redaction refusal ``text`` is, with its part named (else the text's code)."""
    for name, reply in REFUSALS.items():
        head, _, tail = reply.text.partition("{part}")
        pattern = re.escape(head) + r"part [0-9.]+ \([a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+\)"
        if re.fullmatch(pattern + re.escape(tail), text):
            return name
    return text.split(" ", 1)[0]


def _outcome(relay: Relay, code: int, text: str, before: int, address: str) -> str:
    if code != 250:
        return f"refused {code} {_refusal_name(text)}"
    got = relay.delivered()[-1].data
    assert len(relay.delivered()) == before + 1
    leaks = shown(got, address)
    return f"LEAKED in {leaks}" if leaks else REDACTED


def _run(relay: Relay, customer: Customer, to_seller: bool, shape: Shape) -> tuple[str, str]:
    hidden = customer.real if to_seller else SELLER_OTHER_ADDRESS
    entity = shape.build(hidden)
    subject = shape.subject(hidden) if shape.subject else "Re: [shipping] Your parcel"
    extra = shape.headers(hidden) if shape.headers else ""
    if shape.name.startswith("From display name"):
        sender = "=?utf-8?b?" + base64.b64encode(f"Ada ({hidden})".encode()).decode() + "?="
    else:
        sender = "Ada" if to_seller else "Acme"
    if to_seller:
        data = top(f"{sender} <{customer.real}>", customer.reverse, subject, entity, extra)
    else:
        data = top(
            f"{sender} <{SELLER_ADDRESS}>", customer.alias, f"[shipping] {subject}", entity, extra
        )
    before = len(relay.delivered())
    assert shown(data, hidden), f"{shape.name}: the sent message does not show the address"
    send = send_to_seller if to_seller else send_to_customer
    code, text = send(relay, customer, data)
    outcome = _outcome(relay, code, text, before, hidden)
    policy = codes.ATTACHMENT_TYPE_REFUSED
    if not to_seller and text.startswith(policy.text):
        # The seller's attachment policy (relay/content_rules.py) refused the part before redaction
        # could: safe, and said so in the table.
        return outcome + " (attachment policy)", outcome + " (attachment policy)"
    if isinstance(shape.expect, str):
        return outcome, shape.expect
    name = next(name for name, reply in REFUSALS.items() if reply == shape.expect)
    return outcome, f"refused {shape.expect.code} {name}"


def test_every_shape_of_the_issue_is_redacted_or_refused_in_both_directions(relay: Relay) -> None:
    ada = add_customer(relay, "ada", "Ada.Lovelace@private-mailbox.example")
    table = Table(title="issue 11 shapes through the relay")
    for column in ("shape", "in the issue", "to seller", "to customer"):
        table.add_column(column)
    wrong: list[str] = []
    for shape in SHAPES:
        cells = []
        for to_seller in (True, False):
            outcome, expected = _run(relay, ada, to_seller, shape)
            cells.append(outcome)
            if outcome != expected:
                wrong.append(
                    f"{shape.name} ({'to seller' if to_seller else 'to customer'}): "
                    f"{outcome}, expected {expected}"
                )
        table.add_row(shape.name, shape.origin, *cells)
    Console(width=140).print(table)
    origins = Counter(shape.origin for shape in SHAPES)
    print(f"{len(SHAPES)} shapes: {dict(origins)}")
    assert origins[LEAKED] >= 16 and origins[LEAKED] + origins[WAS_REDACTED] >= 44
    assert not wrong, "\n".join(wrong)


BENIGN_TEXT = (
    "Lovelace@private-mailbox.example is my colleague; ada-lovelace@private-mailbox.example\n"
    "is someone else, so is ada.lovelace@other-mailbox.example. Find me as @ada.lovelace or\n"
    "Ada Lovelace (private-mailbox.example). C++ tips: me+you@example.org, 50% & more.\n"
    "Gr\u00fc\u00dfe, \u00c5da \U0001f469\u200d\U0001f4bb co\u00adoperation\n"
)
BENIGN_HTML = (
    "<!DOCTYPE html><html><head><style>@media (max-width:600px){.x{font-size:0}}</style>"
    "</head><body><p class=x>Hello&nbsp;there &#8217;s co&shy;operation &amp; "
    '<a href="https://shop.example/?q=a%40b">ada-lovelace</a>@private-mailbox.example'
    "<span></span>is not you</p><!-- footer --></body></html>\n"
)
BENIGN_CALENDAR = (
    "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:2@client.example\r\n"
    "ATTENDEE;CN=Bob:mailto:bob@private-mailbox.example\r\n"
    "ORGANIZER;CN=Ada:mailto:ada.lovelace@other-mailbox.example\r\n"
    "SUMMARY:Parcel pick-up at the loading door, long line folded\r\n here\r\nEND:VEVENT\r\n"
    "END:VCALENDAR\r\n"
)


def test_benign_look_alike_mail_arrives_byte_identical_where_nothing_was_hidden(
    relay: Relay,
) -> None:
    """The opposite failure: ordinary text near an address's shape is not rewritten. Every
    part of the delivered message has the bytes it was sent with."""
    ada = add_customer(relay, "ada", "Ada.Lovelace@private-mailbox.example")
    entity = multipart(
        "mixed",
        multipart(
            "alternative",
            leaf("text/plain", BENIGN_TEXT, cte="quoted-printable", charset="utf-8"),
            leaf("text/html", BENIGN_HTML, cte="8bit"),
        ),
        leaf("text/calendar", BENIGN_CALENDAR, charset="utf-8"),
        leaf(
            "text/plain",
            "Gr\u00fc\u00dfe aus K\u00f6ln\n",
            cte="quoted-printable",
            charset="iso-8859-1",
        ),
        leaf("text/plain; format=flowed; delsp=yes", "a flowed line \nthat continues\n"),
    )
    subject = "Re: [shipping] C++ & ada-lovelace@private-mailbox.example"
    data = top(f"Ada <{ada.real}>", ada.reverse, subject, entity)
    code, text = send_to_seller(relay, ada, data)
    assert (code, text) == (250, codes.QUEUED.text)
    sent = email.message_from_bytes(data, policy=email.policy.default)
    got = email.message_from_bytes(relay.delivered()[-1].data, policy=email.policy.default)
    assert got["Subject"] == subject
    pairs = list(zip(sent.walk(), got.walk(), strict=True))
    for before, after in pairs:
        if before.is_multipart():
            continue
        assert after.get_content_type() == before.get_content_type()
        assert after["Content-Transfer-Encoding"] == before["Content-Transfer-Encoding"]
        assert after.get_payload() == before.get_payload()  # the raw, encoded bytes
    assert len(pairs) == 7
