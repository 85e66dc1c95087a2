"""The messaging policy: each rule on its own (the functions), then through the relay over
real sockets, where each refusal is a specific reply and a ``message_refused`` ledger entry.
"""

from __future__ import annotations

import datetime as dt
import email.policy
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import relay_server_kit as kit
from relay_server_kit import SELLER_ADDRESS, Relay, message, parsed
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings, SettingsError, load_settings
from mailveil.contacts.models import Order
from mailveil.policy import PolicyEngine, PolicyInput
from mailveil.policy.engine import PRINCIPAL_TYPES
from mailveil.policy.facts import context_attrs, customer_attrs, principal_attrs
from mailveil.relay import codes
from mailveil.relay.codes import Reply
from mailveil.relay.content_rules import (
    MessagingPolicy,
    PolicyRefusal,
    check_content,
    contact_reason,
    decide_message,
    external_links,
    message_input,
    parse_reasons_by_status,
    referenced_ids,
)
from mailveil.relay.routes import PURPOSE_BY_KIND

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def said(code: int, text: str) -> str:
    return f"{code} {text}"


def policy(**overrides: object) -> MessagingPolicy:
    return MessagingPolicy.from_settings(load_settings(env={}, **overrides))


def built(subject: str = "Hi", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = SELLER_ADDRESS
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("Hello\n")
    return msg


def refusal_of(fn: object, *args: object, **kwargs: object) -> Reply:
    with pytest.raises(PolicyRefusal) as err:
        fn(*args, **kwargs)  # type: ignore[operator]
    return err.value.reply


# ------------------------------------------------------------------------ the functions


def test_reasons_by_status_parses_and_names_bad_settings() -> None:
    parsed_ = parse_reasons_by_status("placed=a,b; shipped = c ;")
    assert parsed_ == {"placed": frozenset({"a", "b"}), "shipped": frozenset({"c"})}
    for bad in ("unknown=a", "placed", "placed=Not A Slug"):
        with pytest.raises(SettingsError):
            parse_reasons_by_status(bad)
    with pytest.raises(SettingsError):
        policy(relay_attachment_types="pdf")


def test_contact_reason_from_header_or_subject_tag() -> None:
    assert contact_reason(built("[Shipping] Parcel")) == "shipping"
    assert contact_reason(built("=?utf-8?q?=5Breview-request=5D_Bitte?=")) == "review_request"
    assert contact_reason(built("[shipping] x", X_Contact_Reason="refund")) == "refund"
    assert contact_reason(built("Re: [shipping] x")) is None
    assert contact_reason(built("No tag")) is None


def test_referenced_ids() -> None:
    msg = built(In_Reply_To="<a@relay>")
    msg.set_raw("References", "<z@x> <a@relay>\r\n <b@relay>")
    assert referenced_ids(msg) == ["<a@relay>", "<z@x>", "<a@relay>", "<b@relay>"]


def test_message_rules_decided_by_cedar(settings: Settings) -> None:
    p = policy()
    engine = PolicyEngine.load(settings)
    lookups: list[bool] = []

    def thread(answer: bool) -> Callable[[], bool]:
        def lookup() -> bool:
            lookups.append(answer)
            return answer

        return lookup

    def contact(kind: str, opt_outs: tuple[str, ...] = ()) -> PolicyInput:
        return PolicyInput(
            PRINCIPAL_TYPES[kind],
            principal_attrs(kind, "active", {}),
            customer_attrs("DE", opt_outs, (), False),
            context_attrs(kind, PURPOSE_BY_KIND[kind], None, 90, order_age=3),
        )

    def reason(
        kind: str = "seller",
        opt_outs: tuple[str, ...] = (),
        in_thread: bool | None = None,
        **kw: object,
    ) -> str:
        args: dict[str, object] = {
            "reason": "shipping",
            "order_status": "shipped",
            "references": in_thread is not None,
            "in_thread": thread(bool(in_thread)),
        }
        args.update(kw)
        return decide_message(engine, p, contact(kind, opt_outs), **args)  # type: ignore[arg-type]

    assert reason() == "shipping"
    assert refusal_of(reason, reason="order_question") == codes.REASON_NOT_ALLOWED
    assert refusal_of(reason, order_status=None) == codes.REASON_NOT_ALLOWED
    assert reason(reason="safety_recall", order_status=None) == "safety_recall"
    # An unknown reason is refused naming the ones this sender may give (issue 14).
    unknown = refusal_of(reason, reason="free_stuff")
    assert unknown.code == 550 and unknown.text.startswith(codes.REASON_UNKNOWN.text)
    listed = unknown.text.split("; allowed: ", 1)[1].split(", ")
    assert "free_stuff" not in listed
    assert {"shipping", "review_request", "legal", "refund", "safety_recall"} <= set(listed)
    assert refusal_of(reason, reason="Free Stuff!").text == unknown.text  # not a name
    assert refusal_of(reason, reason=None) == codes.REASON_MISSING
    assert refusal_of(reason, reason=None, in_thread=False) == codes.REASON_MISSING
    assert reason(reason=None, in_thread=True) == "reply"
    # A reply in a thread does not lift the status rule for a reason the seller names.
    assert refusal_of(reason, reason="order_question", in_thread=True) == codes.REASON_NOT_ALLOWED
    opted = ("seller_unsolicited",)
    assert refusal_of(reason, opt_outs=opted) == codes.CUSTOMER_OPTED_OUT
    assert refusal_of(reason, opt_outs=opted, in_thread=False) == codes.CUSTOMER_OPTED_OUT
    assert reason(opt_outs=opted, in_thread=True) == "shipping"
    assert reason(opt_outs=opted, reason="refund", order_status="cancelled") == "refund"
    assert refusal_of(reason, opt_outs=opted, reason="lottery").text == unknown.text
    assert reason("employee", reason="support", order_status=None) == "support"
    assert reason("employee", opt_outs=opted) == "shipping"  # the opt-out is sellers'
    assert refusal_of(reason, "employee", reason="review_request") == codes.REASON_NOT_ALLOWED
    assert refusal_of(reason, "service", reason="review_request") == codes.REASON_NOT_ALLOWED
    # The thread is looked up only where it changes the decision.
    lookups.clear()
    reason(in_thread=True)  # allowed either way
    reason(reason="safety_recall", opt_outs=opted, in_thread=True)
    assert lookups == []
    reason(reason=None, in_thread=True)
    assert lookups == [True]


def test_refusals_name_the_deciding_policy(settings: Settings) -> None:
    engine = PolicyEngine.load(settings)
    opted = PolicyInput(
        "Seller",
        principal_attrs("seller", "active", {}),
        customer_attrs("DE", ("seller_unsolicited",), (), False),
        context_attrs("seller", "order", None, 90, order_age=3),
    )
    with pytest.raises(PolicyRefusal) as err:
        decide_message(
            engine, policy(), opted, reason="shipping", order_status="shipped",
            references=False, in_thread=lambda: False,
        )  # fmt: skip
    assert err.value.policies == ("message-customer-opted-out",)
    assert str(err.value) == "the customer opted out of unsolicited seller messages"
    allowed = message_input(
        policy(), opted, reason="shipping", order_status="shipped", in_thread=False
    )
    assert dict(allowed.context)["allowed_reasons"] == (
        "delivery",
        "return",
        "review_request",
        "shipping",
    )
    assert engine.explain(allowed).decision.policy_ids == ("message-customer-opted-out",)


def test_external_links() -> None:
    allow = frozenset({"relay.example", "shop.example"})
    text = (
        "See https://evil.example/x, //cdn.evil2.example/a.png, www.evil3.example and "
        "http://user@www.shop.example:8080/p, mailto:a@b.example, https://relay.example/t"
    )
    assert external_links(text, allow) == ["evil.example", "cdn.evil2.example", "www.evil3.example"]
    html = '<a href="https&#58;//evil.example/">x</a><img src="cid:logo">'
    assert external_links(html, allow) == ["evil.example"]


def _with_attachment(data: bytes, ctype: str, name: str = "file.bin") -> EmailMessage:
    msg = built()
    maintype, subtype = ctype.split("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def test_content_rules() -> None:
    p = policy()
    check_content(p, _with_attachment(PDF, "application/pdf", "invoice.pdf"))
    assert refusal_of(
        check_content, p, _with_attachment(b"MZ\x90", "application/x-msdownload")
    ) == (codes.ATTACHMENT_TYPE_REFUSED)
    assert refusal_of(check_content, p, _with_attachment(b"MZ\x90", "application/pdf")) == (
        codes.ATTACHMENT_TYPE_MISMATCH
    )
    small = policy(relay_max_attachment_bytes=10)
    assert refusal_of(check_content, small, _with_attachment(PDF, "application/pdf")) == (
        codes.ATTACHMENT_TOO_BIG
    )
    forwarded = built()
    forwarded.add_attachment(built("inner"))
    assert refusal_of(check_content, p, forwarded) == codes.ATTACHMENT_TYPE_REFUSED
    html = built()
    html.add_alternative("<p>Hi</p>", subtype="html")
    check_content(p, html)
    plain = policy(relay_plain_text_only=True)
    assert refusal_of(check_content, plain, html) == codes.PLAIN_TEXT_ONLY
    pdf_only = policy(relay_plain_text_only=True)
    assert refusal_of(check_content, pdf_only, _with_attachment(PDF, "application/pdf")) == (
        codes.PLAIN_TEXT_ONLY
    )
    check_content(plain, built())
    links = policy(relay_forbid_external_links=True, relay_link_allowlist="acme-books.example")
    linked = built()
    linked.set_content("Track it at https://track.acme-books.example/123\n")
    check_content(links, linked)
    linked.set_content("Cheaper at https://offsite.example/deal\n")
    assert refusal_of(check_content, links, linked) == codes.EXTERNAL_LINKS


# --------------------------------------------------------------------- through the relay


def seller_sends(relay: Relay, customer: str, subject: str, **kw: object) -> str:
    alias = relay.world.alias(customer, "acme")
    data = kw.pop("data", None) or message(from_=SELLER_ADDRESS, to=alias, subject=subject, **kw)  # type: ignore[arg-type]
    assert isinstance(data, bytes)
    code, text = relay.send(
        data, mail_from=SELLER_ADDRESS, rcpt=alias, token=relay.world.keys["acme"]
    )
    return said(code, text)


def refusals(relay: Relay) -> list[str]:
    return [e["detail"]["reply"] for e in relay.ledger("message_refused")]


def test_reason_must_fit_the_order_status(relay: Relay) -> None:
    # alice's order is shipped, carol's only placed.
    assert seller_sends(relay, "alice", "[shipping] On its way") == str(codes.QUEUED)
    assert seller_sends(relay, "alice", "[order_question] Size?") == str(codes.REASON_NOT_ALLOWED)
    assert seller_sends(relay, "carol", "[order_question] Size?") == str(codes.QUEUED)
    assert seller_sends(relay, "carol", "[review_request] Review?") == str(codes.REASON_NOT_ALLOWED)
    assert seller_sends(relay, "carol", "[safety_recall] Stop using it") == str(codes.QUEUED)
    assert seller_sends(relay, "carol", "[lottery] You won").startswith(
        str(codes.REASON_UNKNOWN) + "; allowed: "
    )
    assert seller_sends(relay, "carol", "Untagged") == str(codes.REASON_MISSING)
    assert seller_sends(
        relay, "carol", "Plain subject", headers={"X-Contact-Reason": "shipping"}
    ) == str(codes.QUEUED)
    assert len(relay.delivered()) == 4
    assert refusals(relay) == ["550 5.7.1"] * 4
    assert [e["ref"] for e in relay.ledger("message")] == [
        "shipping",
        "order_question",
        "safety_recall",
        "shipping",
    ]
    # The header used to carry the reason does not reach the customer.
    assert all(b"X-Contact-Reason" not in m.data for m in relay.delivered())


def test_opt_out_except_critical_reasons_and_replies_in_a_thread(relay: Relay) -> None:
    w = relay.world
    assert seller_sends(relay, "bob", "[shipping] On its way") == str(codes.CUSTOMER_OPTED_OUT)
    assert seller_sends(relay, "bob", "[refund] Your refund") == str(codes.QUEUED)
    # Bob writes to the seller; the seller's reply in that thread gets through, untagged too.
    reverse = w.reverse("bob", "acme")
    code, _ = relay.send(
        message(from_=w.real["bob"], to=reverse, subject="Where is my parcel?"),
        mail_from=w.real["bob"],
        rcpt=reverse,
    )
    assert code == 250
    issued = parsed(relay.delivered()[-1].data)["Message-ID"]
    assert seller_sends(
        relay, "bob", "Re: Where is my parcel?", headers={"In-Reply-To": issued}
    ) == str(codes.QUEUED)
    assert relay.ledger("message")[-1]["ref"] == "reply"
    # The seller's own earlier message is not a thread the customer started.
    own = parsed(relay.delivered()[0].data)["Message-ID"]
    assert seller_sends(relay, "bob", "[shipping] Follow-up", headers={"References": own}) == str(
        codes.CUSTOMER_OPTED_OUT
    )


def test_contact_policy_is_rechecked_at_send_time(relay: Relay) -> None:
    """An order older than the contact window: Cedar no longer permits the seller."""
    w = relay.world
    with relay.session_factory() as session:
        session.execute(
            update(Order)
            .where(Order.customer_id == w.customers["alice"].id)
            .values(placed_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=400))
        )
        session.commit()
    assert seller_sends(relay, "alice", "[shipping] Late") == str(codes.CONTACT_NOT_ALLOWED)
    [entry] = relay.ledger("message_refused")
    assert entry["detail"]["stage"] == "rcpt"
    assert "90 days" in entry["detail"]["why"]


@pytest.fixture
def strict_relay(
    relay_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> Iterator[Relay]:
    yield from kit.open_relay(
        relay_settings,
        session_factory,
        tmp_path,
        relay_plain_text_only=True,
        relay_forbid_external_links=True,
        relay_link_allowlist="acme-books.example",
    )


def _html(relay: Relay) -> bytes:
    alias = relay.world.alias("alice", "acme")
    msg = email.message_from_bytes(
        message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] x"), policy=email.policy.default
    )
    assert isinstance(msg, EmailMessage)
    msg.add_alternative("<p>On its way</p>", subtype="html")
    return msg.as_bytes(policy=email.policy.SMTP)


def test_operator_flags_plain_text_only_and_no_external_links(strict_relay: Relay) -> None:
    r = strict_relay
    assert seller_sends(r, "alice", "[shipping] x", data=_html(r)) == str(codes.PLAIN_TEXT_ONLY)
    assert seller_sends(
        r, "alice", "[shipping] x", body="Cheaper at https://elsewhere.example/deal\n"
    ) == str(codes.EXTERNAL_LINKS)
    assert seller_sends(
        r, "alice", "[shipping] x", body="Track: https://track.acme-books.example/1\n"
    ) == str(codes.QUEUED)
    assert refusals(r) == ["550 5.6.1", "550 5.7.1"]


@pytest.fixture
def small_attachments(
    relay_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> Iterator[Relay]:
    yield from kit.open_relay(
        relay_settings, session_factory, tmp_path, relay_max_attachment_bytes=2000
    )


def _attached(relay: Relay, data: bytes, ctype: str, name: str) -> bytes:
    alias = relay.world.alias("alice", "acme")
    msg = email.message_from_bytes(
        message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] Invoice"),
        policy=email.policy.default,
    )
    assert isinstance(msg, EmailMessage)
    maintype, subtype = ctype.split("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=email.policy.SMTP)


def test_attachments_by_type_content_and_size(small_attachments: Relay) -> None:
    r = small_attachments
    cases = [
        (PDF, "application/pdf", "invoice.pdf", codes.QUEUED),
        (
            b"MZ\x90\x00" * 10,
            "application/x-msdownload",
            "setup.exe",
            codes.ATTACHMENT_TYPE_REFUSED,
        ),
        (b"MZ\x90\x00" * 10, "application/pdf", "invoice.pdf", codes.ATTACHMENT_TYPE_MISMATCH),
        (PDF + b"0" * 3000, "application/pdf", "big.pdf", codes.ATTACHMENT_TOO_BIG),
    ]
    for data, ctype, name, reply in cases:
        sent = _attached(r, data, ctype, name)
        assert seller_sends(r, "alice", "", data=sent) == str(reply), name
    assert refusals(r) == ["550 5.6.1", "550 5.6.1", "552 5.3.4"]
    [got] = r.delivered()
    attachment = next(parsed(got.data).iter_attachments())
    assert attachment.get_content() == PDF
