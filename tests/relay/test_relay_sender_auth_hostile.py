"""Sender authentication on hostile input (never raises, bounded work) and the relay's two
decisions built on it: ``sender_matches_principal`` and ``customer_sender_ok`` truth tables.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sender_auth_kit import (
    OTHER_IP,
    Keys,
    check,
    make_message,
    sign,
    zone,
)

from mailveil.relay.dkim_verify import MAX_DKIM_SIGNATURES, DkimResult
from mailveil.relay.sender_auth import (
    SenderAuth,
    StaticResolver,
    check_sender,
    customer_sender_ok,
    sender_matches_principal,
)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


# -- hostile input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\x00\xff\xfe garbage \x00" * 100,
        b" leading continuation\r\nFrom: a@seller.example\r\n\r\n",
        b"no headers at all, just text",
        b"\r\n\r\nFrom: a@seller.example\r\n",
        b"DKIM-Signature: \x00\xff;;;==\r\nFrom: a@seller.example\r\n\r\nx",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=seller.example; s=s1; h=from; bh=; b=\r\n"
        b"From: a@seller.example\r\n\r\nx",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=seller.example; s=../../etc; h=from; bh=AAAA;"
        b" b=AAAA\r\nFrom: a@seller.example\r\n\r\nx",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=seller.example; s=s1; h=from; bh=AAAA; b=AAAA;"
        b" x=1\r\nFrom: a@seller.example\r\n\r\nx",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=seller.example; s=s1; h=from; bh=AAAA; b=AA"
        + b" " * 3000
        + b"!\r\nFrom: a@seller.example\r\n\r\nx",
        b"DKIM-Signature: " + b"x" * 100_000 + b"\r\nFrom: a@seller.example\r\n\r\n",
        b"From: " + b"a" * 100_000 + b"@seller.example\r\n\r\n",
        b"From: a@seller.example\r\n" + b"X: y\r\n" * 10_000 + b"\r\nbody",
    ],
    ids=lambda m: f"{len(m)}-bytes",
)
def test_hostile_messages_never_raise(keys: Keys, message: bytes) -> None:
    started = time.monotonic()
    auth = check(message, zone(keys), ip=OTHER_IP)
    assert time.monotonic() - started < 3.0
    assert not auth.aligned
    assert all(r.result in {"fail", "permerror", "neutral", "temperror"} for r in auth.dkim)


def test_a_thousand_signatures_cost_five_verifications(keys: Keys) -> None:
    signed = sign(make_message(), keys)
    header = signed[: signed.index(b"From: ")]
    wrong = header.replace(b"s=s1", b"s=nokey")
    flood = wrong * 1000 + signed
    resolver = StaticResolver(zone(keys))
    started = time.monotonic()
    auth = check_sender(
        flood, mail_from="b@seller.example", client_ip=OTHER_IP, helo="h", resolver=resolver
    )
    elapsed = time.monotonic() - started
    assert len(auth.dkim) == MAX_DKIM_SIGNATURES
    assert auth.dkim_skipped == 1001 - MAX_DKIM_SIGNATURES
    assert [r.result for r in auth.dkim] == ["permerror"] * MAX_DKIM_SIGNATURES
    # The valid signature is below the cap, so it is never looked at: not aligned.
    assert not auth.aligned
    key_queries = [q for q in resolver.queries if "_domainkey" in q[0]]
    assert len(key_queries) == MAX_DKIM_SIGNATURES
    assert elapsed < 3.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from(
            [
                b"From: a@seller.example\r\n",
                b'From: "x" <b@evil.example>\r\n',
                b"DKIM-Signature: v=1; a=rsa-sha256; d=seller.example; s=s1; h=from; bh=",
                b"DKIM-Signature: v=1; a=ed25519-sha256; d=seller.example; s=e1; h=from:to;",
                b" b=AAAA\r\n",
                b"\r\n",
                b"\n",
                b"\r",
                b"\t",
                b":",
                b";",
                b"=",
                b"\x00",
                b"\xff",
                b"Subject: hi\r\n",
            ]
        ),
        max_size=30,
    ),
    st.binary(max_size=64),
)
def test_generated_messages_never_raise(parts: list[bytes], noise: bytes) -> None:
    message = b"".join(parts) + noise
    auth = check_sender(
        message,
        mail_from="b@seller.example",
        client_ip=OTHER_IP,
        helo="h",
        resolver=StaticResolver({("s1._domainkey.seller.example", "TXT"): ["v=DKIM1; p="]}),
    )
    assert not auth.aligned


# -- decisions ----------------------------------------------------------------------------


def _auth(
    from_domain: str | None = "seller.example",
    *,
    aligned: bool = True,
    spf_aligned: bool = False,
    spf_domain: str = "seller.example",
    dkim_domains: tuple[str, ...] = ("seller.example",),
) -> SenderAuth:
    return SenderAuth(
        spf="pass" if spf_aligned else "fail",
        spf_domain=spf_domain,
        dkim=[DkimResult(d, "s1", "pass") for d in dkim_domains],
        from_domain=from_domain,
        dmarc_policy="reject",
        aligned=aligned,
        dmarc_result="pass" if aligned else "fail",
        spf_aligned=spf_aligned,
        dkim_aligned_domains=dkim_domains if aligned else (),
    )


PRINCIPAL = {"sending_addresses": ["Sales@Seller.example"], "sending_domains": ["shop.example"]}


@pytest.mark.parametrize(
    ("auth", "header_from", "envelope_from", "expected"),
    [
        # authorised address, aligned
        (_auth(), "Seller <sales@seller.example>", "b@seller.example", True),
        # authorised address, not aligned
        (_auth(aligned=False), "sales@seller.example", "b@seller.example", False),
        # another mailbox on a domain that is only authorised address-by-address
        (_auth(), "ceo@seller.example", "b@seller.example", False),
        # authorised domain, any mailbox on it, aligned
        (_auth("shop.example", dkim_domains=("shop.example",)), "x@shop.example", "", True),
        # authorised domain, signed by its parent's subdomain branch
        (_auth("shop.example", dkim_domains=("mail.shop.example",)), "x@shop.example", "", True),
        # subdomain of an authorised domain is a different domain
        (
            _auth("news.shop.example", dkim_domains=("shop.example",)),
            "x@news.shop.example",
            "",
            False,
        ),
        # authorised domain but not aligned
        (_auth("shop.example", aligned=False), "x@shop.example", "", False),
        # the auth was computed for a different From
        (_auth("evil.example"), "sales@seller.example", "b@seller.example", False),
        # unparsable header From
        (_auth(), "sales@seller.example, x@evil.example", "b@seller.example", False),
        (_auth(), "", "b@seller.example", False),
        # aligned by SPF for the envelope it was computed for
        (
            _auth(spf_aligned=True, dkim_domains=()),
            "sales@seller.example",
            "b@seller.example",
            True,
        ),
        # ...but not when the caller's envelope differs
        (
            _auth(spf_aligned=True, dkim_domains=()),
            "sales@seller.example",
            "b@other.example",
            False,
        ),
        # relaxed-aligned sibling under a parent missing from the PSL: not the same owner
        (
            _auth("a.mailhost.example", dkim_domains=("b.mailhost.example",)),
            "x@a.mailhost.example",
            "",
            False,
        ),
    ],
)
def test_sender_matches_principal(
    auth: SenderAuth, header_from: str, envelope_from: str, expected: bool
) -> None:
    principal = dict(PRINCIPAL)
    principal["sending_domains"] = [*PRINCIPAL["sending_domains"], "a.mailhost.example"]
    assert (
        sender_matches_principal(
            auth, envelope_from=envelope_from, header_from=header_from, **principal
        )
        is expected
    )


def test_sender_matches_principal_end_to_end(keys: Keys) -> None:
    signed = sign(make_message(), keys)
    auth = check(signed, zone(keys), ip=OTHER_IP)
    spoofed = check(make_message(), zone(keys), ip=OTHER_IP)  # no signature, SPF fails
    for evidence, expected in ((auth, True), (spoofed, False)):
        assert (
            sender_matches_principal(
                evidence,
                sending_addresses=["sales@seller.example"],
                sending_domains=[],
                envelope_from="b@seller.example",
                header_from="Seller Shop <sales@seller.example>",
            )
            is expected
        )


@pytest.mark.parametrize(
    ("auth", "real_domain", "expected"),
    [
        (_auth("mail.example", dkim_domains=("mail.example",)), "mail.example", True),
        (_auth("mail.example", dkim_domains=("mail.example",)), "MAIL.example.", True),
        (_auth("mail.example", aligned=False), "mail.example", False),
        (_auth("other.example", dkim_domains=("other.example",)), "mail.example", False),
        (_auth("sub.mail.example", dkim_domains=("mail.example",)), "mail.example", False),
        (_auth(None, aligned=False), "mail.example", False),
        (_auth("mail.example"), "", False),
    ],
)
def test_customer_sender_ok(auth: SenderAuth, real_domain: str, expected: bool) -> None:
    assert customer_sender_ok(auth, real_domain) is expected


def test_customer_reply_end_to_end(keys: Keys) -> None:
    records = zone(keys)
    records[("s1._domainkey.mail.example", "TXT")] = [keys.rsa_record]
    records[("_dmarc.mail.example", "TXT")] = ["v=DMARC1; p=none"]
    reply = sign(make_message("Customer <jane@mail.example>"), keys, domain="mail.example")
    auth = check(reply, records, mail_from="jane@mail.example", ip=OTHER_IP)
    assert customer_sender_ok(auth, "mail.example")
    # The same reply with a forged From (someone else's domain) is refused.
    forged = reply.replace(b"jane@mail.example", b"jane@seller.example")
    assert not customer_sender_ok(check(forged, records, ip=OTHER_IP), "seller.example")


def test_sender_auth_never_holds_an_address(keys: Keys) -> None:
    auth = check(sign(make_message(), keys), zone(keys))
    assert "@" not in repr(replace(auth, notes=()))
