"""Sender authentication: SPF (pyspf), DKIM (dkimpy), DMARC alignment and the relay's two
decisions built on them. DNS is a StaticResolver (the one thing mocked); signatures are real,
made by dkimpy's own signer with test keys for the "seller" domains.

Addresses use the reserved example domains and TEST-NET IPs (RFC 2606, RFC 5737): they are
only strings here, no packet is sent.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import dkim
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailveil.relay.dkim import RSA_SHA256, DkimKey, DkimSigner
from mailveil.relay.dkim_verify import MAX_DKIM_SIGNATURES, DkimResult
from mailveil.relay.dmarc import normalise_domain, organisational_domain, parse_dmarc
from mailveil.relay.sender_auth import (
    DnsResolver,
    DnsTemporaryError,
    SenderAuth,
    StaticResolver,
    check_sender,
    customer_sender_ok,
    from_domain_of,
    sender_matches_principal,
)

SELLER_IP = "192.0.2.10"
OTHER_IP = "198.51.100.7"


class Keys:
    """One RSA and one Ed25519 key, in the forms dkimpy signs with and DNS publishes."""

    def __init__(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.rsa_record = f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}"
        ed = Ed25519PrivateKey.generate()
        self.ed_seed = base64.b64encode(ed.private_bytes_raw())
        raw = base64.b64encode(ed.public_key().public_bytes_raw()).decode()
        self.ed_record = f"v=DKIM1; k=ed25519; p={raw}"


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def make_message(
    from_: str = "Seller Shop <sales@seller.example>", *, extra: bytes = b"", body: bytes = b""
) -> bytes:
    return (
        b"From: " + from_.encode() + b"\r\n"
        b"To: c-19ab@relay.mailveil.localhost\r\n"
        b"Subject: About your order\r\n"
        b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        b"Message-ID: <m1@seller.example>\r\n" + extra + b"\r\n"
        + (body or b"Hello,\r\nyour order has shipped.\r\n")
    )  # fmt: skip


def sign(
    message: bytes,
    keys: Keys,
    *,
    domain: str = "seller.example",
    selector: str = "s1",
    ed25519: bool = False,
    include: list[bytes] | None = None,
    length: bool = False,
) -> bytes:
    header = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        keys.ed_seed if ed25519 else keys.rsa_pem,
        signature_algorithm=b"ed25519-sha256" if ed25519 else b"rsa-sha256",
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=include,
        length=length,
    )
    return bytes(header) + message


def zone(keys: Keys) -> dict[tuple[str, str], list[str]]:
    """seller.example publishes SPF, an RSA and an Ed25519 key, and DMARC p=reject."""
    return {
        ("seller.example", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
        ("s1._domainkey.seller.example", "TXT"): [keys.rsa_record],
        ("e1._domainkey.seller.example", "TXT"): [keys.ed_record],
        ("_dmarc.seller.example", "TXT"): ["v=DMARC1; p=reject; rua=mailto:d@seller.example"],
    }


def check(
    message: bytes,
    records: dict[tuple[str, str], list[str]],
    *,
    mail_from: str = "bounce@seller.example",
    ip: str = SELLER_IP,
    helo: str = "mx.seller.example",
    failing: tuple[tuple[str, str], ...] = (),
) -> SenderAuth:
    resolver = StaticResolver(records, failing=failing)
    return check_sender(message, mail_from=mail_from, client_ip=ip, helo=helo, resolver=resolver)


# -- SPF ----------------------------------------------------------------------------------

SPF_CASES = [
    # (record for seller.example, client ip, expected)
    ("v=spf1 ip4:192.0.2.0/24 -all", SELLER_IP, "pass"),
    ("v=spf1 ip4:192.0.2.0/24 -all", OTHER_IP, "fail"),
    ("v=spf1 ip4:192.0.2.0/24 ~all", OTHER_IP, "softfail"),
    ("v=spf1 ip4:192.0.2.0/24 ?all", OTHER_IP, "neutral"),
    ("v=spf1 ip4:192.0.2.10 -all", SELLER_IP, "pass"),
    ("v=spf1 -ip4:192.0.2.10 +all", SELLER_IP, "fail"),
    ("v=spf1 ip6:2001:db8::/32 -all", "2001:db8::25", "pass"),
    ("v=spf1 include:_spf.mailhost.example -all", SELLER_IP, "pass"),
    ("v=spf1 include:_spf.mailhost.example -all", OTHER_IP, "fail"),
    ("v=spf1 redirect=_spf.mailhost.example", SELLER_IP, "pass"),
    ("v=spf1 redirect=_spf.mailhost.example", OTHER_IP, "softfail"),
    ("v=spf1 a:mx.seller.example -all", "192.0.2.25", "pass"),
    ("v=spf1 mx -all", "192.0.2.25", "pass"),
    ("v=spf1 mx -all", SELLER_IP, "fail"),
    ("v=spf1 ip4:192.0.2.300 -all", SELLER_IP, "permerror"),
    ("v=spf1 frobnicate -all", SELLER_IP, "permerror"),
    ("v=spf1 include:nothing-here.example -all", SELLER_IP, "permerror"),
    ("v=spf1 redirect=loop.seller.example", SELLER_IP, "permerror"),
]


@pytest.mark.parametrize(("record", "ip", "expected"), SPF_CASES)
def test_spf_results(keys: Keys, record: str, ip: str, expected: str) -> None:
    records = zone(keys)
    records[("seller.example", "TXT")] = [record]
    records[("_spf.mailhost.example", "TXT")] = ["v=spf1 ip4:192.0.2.0/28 ~all"]
    records[("mx.seller.example", "A")] = ["192.0.2.25"]
    records[("seller.example", "MX")] = ["10 mx.seller.example"]
    records[("loop.seller.example", "TXT")] = ["v=spf1 redirect=loop.seller.example"]
    auth = check(make_message(), records, ip=ip)
    assert (auth.spf, auth.spf_domain) == (expected, "seller.example")


def test_spf_without_record_is_none(keys: Keys) -> None:
    records = zone(keys)
    records[("seller.example", "TXT")] = ["google-site-verification=abc"]
    assert check(make_message(), records).spf == "none"


def test_two_spf_records_are_a_permerror(keys: Keys) -> None:
    records = zone(keys)
    records[("seller.example", "TXT")] = ["v=spf1 -all", "v=spf1 +all"]
    assert check(make_message(), records).spf == "permerror"


def test_spf_dns_failure_is_a_temperror(keys: Keys) -> None:
    auth = check(make_message(), zone(keys), failing=(("seller.example", "TXT"),))
    assert auth.spf == "temperror"


def test_null_sender_is_checked_against_helo(keys: Keys) -> None:
    records = zone(keys)
    records[("mx.seller.example", "TXT")] = ["v=spf1 ip4:192.0.2.10 -all"]
    auth = check(make_message(), records, mail_from="", helo="mx.seller.example")
    assert (auth.spf, auth.spf_domain) == ("pass", "mx.seller.example")


def test_spf_lookups_are_bounded(keys: Keys) -> None:
    """Eleven chained includes exceed RFC 7208's ten-lookup limit: permerror, few queries."""
    records = zone(keys)
    records[("seller.example", "TXT")] = ["v=spf1 include:i0.seller.example -all"]
    for i in range(20):
        records[(f"i{i}.seller.example", "TXT")] = [f"v=spf1 include:i{i + 1}.seller.example"]
    resolver = StaticResolver(records)
    auth = check_sender(
        make_message(),
        mail_from="b@seller.example",
        client_ip=SELLER_IP,
        helo="h",
        resolver=resolver,
    )
    assert auth.spf == "permerror"
    assert sum(1 for q in resolver.queries if q[0].startswith("i")) <= 11


def test_garbage_envelope_values_do_not_raise(keys: Keys) -> None:
    records = zone(keys)
    assert check(make_message(), records, ip="not-an-ip").spf == "permerror"
    assert check(make_message(), records, mail_from="no-at-sign").spf == "none"
    assert check(make_message(), records, mail_from="a@[192.0.2.1]").spf == "none"
    assert check(make_message(), records, mail_from="", helo="[192.0.2.1]").spf == "none"


# -- DKIM ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("ed25519", "selector"), [(False, "s1"), (True, "e1")])
def test_dkim_pass_for_a_seller_signature(keys: Keys, ed25519: bool, selector: str) -> None:
    signed = sign(make_message(), keys, selector=selector, ed25519=ed25519)
    auth = check(signed, zone(keys), ip=OTHER_IP)
    assert auth.dkim == [DkimResult("seller.example", selector, "pass")]


def test_dkim_fail_when_body_or_signed_header_changes(keys: Keys) -> None:
    signed = sign(make_message(), keys)
    body_changed = signed.replace(b"has shipped", b"was cancelled")
    header_changed = signed.replace(b"About your order", b"Urgent: verify your account")
    for forged in (body_changed, header_changed):
        assert check(forged, zone(keys)).dkim == [DkimResult("seller.example", "s1", "fail")]


@pytest.mark.parametrize(
    ("key_record", "expected"),
    [
        (None, "permerror"),  # no key published
        ("v=DKIM1; k=rsa; p=", "permerror"),  # revoked
        ("v=DKIM1; k=rsa; p=!!!notbase64", "permerror"),
        ("v=DKIM1; k=unknown; p=AAAA", "permerror"),
    ],
)
def test_dkim_unusable_keys(keys: Keys, key_record: str | None, expected: str) -> None:
    records = zone(keys)
    del records[("s1._domainkey.seller.example", "TXT")]
    if key_record is not None:
        records[("s1._domainkey.seller.example", "TXT")] = [key_record]
    assert check(sign(make_message(), keys), records).dkim[0].result == expected


def test_dkim_key_dns_failure_is_a_temperror(keys: Keys) -> None:
    auth = check(
        sign(make_message(), keys),
        zone(keys),
        ip=OTHER_IP,
        failing=(("s1._domainkey.seller.example", "TXT"),),
    )
    assert auth.dkim[0].result == "temperror"
    assert not auth.aligned
    assert auth.temporary_failure


def sign_without_from(message: bytes, keys: Keys) -> bytes:
    """A valid signature whose h= leaves From out (dkimpy's signer refuses to make one, so
    this drives the same header construction our signer uses, with another field list)."""
    key = serialization.load_pem_private_key(keys.rsa_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signer = DkimSigner("seller.example", [DkimKey(RSA_SHA256, "s1", key)])
    headers, body = dkim.rfc822_parse(message)
    policy = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    body_hash = base64.b64encode(hashlib.sha256(policy.canonicalize_body(body)).digest())
    header = signer._one(
        dkim,
        signer.keys[0],
        policy,
        policy.canonicalize_headers(headers),
        [b"subject", b"date"],
        body_hash,
        str(int(time.time())).encode(),
        b"\r\n",
    )
    return header + message


def test_signature_not_covering_from_is_a_permerror(keys: Keys) -> None:
    """dkimpy calls it valid; RFC 6376 requires From in h=, so it proves nothing."""
    signed = sign_without_from(make_message(), keys)
    records = zone(keys)
    dnsfunc = lambda name, timeout=5: records[(name.decode().rstrip("."), "TXT")][0].encode()  # noqa: E731
    assert dkim.DKIM(signed).verify(dnsfunc=dnsfunc)
    auth = check(signed, records, ip=OTHER_IP)
    assert auth.dkim == [DkimResult("seller.example", "s1", "permerror")]
    assert not auth.aligned


def test_partial_body_signature_is_not_a_pass(keys: Keys) -> None:
    signed = sign(make_message(), keys, length=True) + b"Appended: click here\r\n"
    auth = check(signed, zone(keys), ip=OTHER_IP)
    assert auth.dkim == [DkimResult("seller.example", "s1", "policy")]
    assert not auth.aligned


def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def der_integer(value: int) -> bytes:
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + der_length(len(raw)) + raw


def der_sequence(*items: bytes) -> bytes:
    inner = b"".join(items)
    return b"\x30" + der_length(len(inner)) + inner


@pytest.mark.parametrize(
    ("modulus_bits", "exponent"),
    [(8192, (1 << 8000) + 1), (16384, 65537)],
    ids=["huge-exponent", "huge-modulus"],
)
def test_costly_rsa_keys_are_refused_before_arithmetic(
    keys: Keys, modulus_bits: int, exponent: int
) -> None:
    """The sender publishes the key: an 8000-bit exponent would cost ~1.5 s per signature in
    dkimpy's Python arithmetic (five signatures per message), so such keys are refused."""
    weird = der_sequence(der_integer((1 << (modulus_bits - 1)) + 1), der_integer(exponent))
    records = zone(keys)
    records[("s1._domainkey.seller.example", "TXT")] = [
        "v=DKIM1; k=rsa; p=" + base64.b64encode(weird).decode()
    ]
    started = time.monotonic()
    auth = check(sign(make_message(), keys), records)
    assert auth.dkim[0].result == "permerror"
    assert time.monotonic() - started < 0.5


# -- DMARC alignment ----------------------------------------------------------------------


def test_aligned_via_spf_only(keys: Keys) -> None:
    auth = check(make_message(), zone(keys))
    assert (auth.spf, auth.dkim, auth.aligned) == ("pass", [], True)
    assert auth.spf_aligned and auth.dkim_aligned_domains == ()
    assert (auth.from_domain, auth.dmarc_policy, auth.dmarc_result) == (
        "seller.example",
        "reject",
        "pass",
    )


def test_aligned_via_dkim_only(keys: Keys) -> None:
    auth = check(sign(make_message(), keys), zone(keys), ip=OTHER_IP)
    assert auth.spf == "fail"
    assert auth.aligned and not auth.spf_aligned
    assert auth.dkim_aligned_domains == ("seller.example",)
    assert auth.dmarc_result == "pass"


def test_subdomain_relaxed_alignment(keys: Keys) -> None:
    """From news.seller.example, signed d=seller.example, envelope on bounces.seller.example."""
    message = sign(make_message("Seller <offers@news.seller.example>"), keys)
    records = zone(keys)
    records[("bounces.seller.example", "TXT")] = ["v=spf1 ip4:192.0.2.0/24 -all"]
    auth = check(message, records, mail_from="b@bounces.seller.example")
    assert auth.from_domain == "news.seller.example"
    assert auth.spf_aligned and auth.dkim_aligned_domains == ("seller.example",)
    # The organisational domain's record applies (its sp= would, if it had one).
    assert (auth.dmarc_policy, auth.dmarc_result) == ("reject", "pass")


def test_strict_alignment_refuses_subdomains(keys: Keys) -> None:
    records = zone(keys)
    records[("_dmarc.seller.example", "TXT")] = [
        "v=DMARC1; p=quarantine; sp=reject; adkim=s; aspf=s"
    ]
    message = sign(make_message("Seller <offers@news.seller.example>"), keys)
    auth = check(message, records, ip=OTHER_IP)
    assert auth.dkim[0].result == "pass"
    assert not auth.aligned
    assert (auth.dmarc_policy, auth.dmarc_result) == ("reject", "fail")


def test_misaligned_signing_domain(keys: Keys) -> None:
    """A valid signature by someone else's domain says nothing about the From domain."""
    records = zone(keys)
    records[("s1._domainkey.mailhost.example", "TXT")] = [keys.rsa_record]
    message = sign(make_message(), keys, domain="mailhost.example")
    auth = check(message, records, ip=OTHER_IP)
    assert auth.dkim == [DkimResult("mailhost.example", "s1", "pass")]
    assert not auth.aligned
    assert auth.dmarc_result == "fail"
    assert not auth.temporary_failure


def test_misaligned_spf_domain(keys: Keys) -> None:
    records = zone(keys)
    records[("mailhost.example", "TXT")] = ["v=spf1 ip4:192.0.2.0/24 -all"]
    auth = check(make_message(), records, mail_from="bounce@mailhost.example")
    assert (auth.spf, auth.spf_domain, auth.aligned) == ("pass", "mailhost.example", False)


def test_no_dmarc_record(keys: Keys) -> None:
    records = zone(keys)
    del records[("_dmarc.seller.example", "TXT")]
    aligned = check(make_message(), records)
    assert (aligned.dmarc_policy, aligned.dmarc_result, aligned.aligned) == (None, "none", True)
    unaligned = check(make_message(), records, ip=OTHER_IP)
    assert (unaligned.dmarc_result, unaligned.aligned) == ("none", False)


def test_several_dmarc_records_count_as_none(keys: Keys) -> None:
    records = zone(keys)
    records[("_dmarc.seller.example", "TXT")] = ["v=DMARC1; p=reject", "v=DMARC1; p=none"]
    assert check(make_message(), records).dmarc_policy is None


def test_dmarc_dns_failure_is_a_temperror(keys: Keys) -> None:
    auth = check(
        make_message(), zone(keys), ip=OTHER_IP, failing=(("_dmarc.seller.example", "TXT"),)
    )
    assert auth.dmarc_result == "temperror"
    assert auth.temporary_failure


def test_public_suffix_siblings_are_not_aligned(keys: Keys) -> None:
    """a.github.io and b.github.io have different owners (PSL private section)."""
    records = zone(keys)
    records[("s1._domainkey.b.github.io", "TXT")] = [keys.rsa_record]
    message = sign(make_message("A <x@a.github.io>"), keys, domain="b.github.io")
    auth = check(message, records, ip=OTHER_IP)
    assert auth.dkim[0].result == "pass"
    assert not auth.aligned


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("seller.example", "seller.example"),
        ("a.b.seller.example", "seller.example"),
        ("mail.shop.co.uk", "shop.co.uk"),
        ("x.github.io", "x.github.io"),
        ("co.uk", "co.uk"),
    ],
)
def test_organisational_domain(domain: str, org: str) -> None:
    assert organisational_domain(domain) == org


def _psl_vectors() -> list[tuple[str | None, str | None]]:
    """The Public Suffix List's own test vectors, as shipped inside publicsuffixlist."""
    import publicsuffixlist

    path = Path(publicsuffixlist.__file__).with_name("test_psl.txt")
    out: list[tuple[str | None, str | None]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("checkPublicSuffix("):
            args = line[len("checkPublicSuffix(") : line.rindex(")")]
            a, b = (x.strip() for x in args.split(","))
            out.append(
                (None if a == "null" else a.strip("'"), None if b == "null" else b.strip("'"))
            )
    return out


def test_public_suffix_list_vectors() -> None:
    vectors = _psl_vectors()
    assert len(vectors) > 50
    for given_name, expected in vectors:
        if given_name is None:
            continue
        name = normalise_domain(given_name)
        if given_name.startswith("."):
            assert name is None, given_name
            continue
        assert name is not None, given_name
        want = normalise_domain(expected) if expected else name
        assert organisational_domain(name) == want, given_name


def test_parse_dmarc() -> None:
    rec = parse_dmarc("v=DMARC1; p=Quarantine; sp=reject; adkim=s; pct=50", "x.example")
    assert rec is not None
    assert (rec.policy, rec.subdomain_policy, rec.adkim, rec.aspf) == (
        "quarantine",
        "reject",
        "s",
        "r",
    )
    assert parse_dmarc("v=spf1 -all", "x.example") is None
    assert parse_dmarc("p=reject; v=DMARC1", "x.example") is None
    bad_policy = parse_dmarc("v=DMARC1; p=maybe", "x.example")
    assert bad_policy is not None and bad_policy.policy == "none"


# -- From --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"From: Seller <sales@Seller.Example>\r\n", "seller.example"),
        (b'From: "b@evil.example" <a@good.example>\r\n', "good.example"),
        (b"FROM:sales@seller.example\r\n", "seller.example"),
        (b"From: Seller\r\n <sales@seller.example>\r\n", "seller.example"),
        (b"From: a@one.example, b@two.example\r\n", None),
        (b"From: a@one.example\r\nFrom: b@two.example\r\n", None),
        (b"From : a@one.example\r\nFrom: b@two.example\r\n", None),
        (b"From: undisclosed-recipients:;\r\n", None),
        (b"From: someone@[192.0.2.1]\r\n", None),
        (b"From: nobody\r\n", None),
        (b"From: \r\n", None),
        (b"Sender: a@one.example\r\n", None),
        (b"From: =?utf-8?q?a=40evil.example?= <a@good.example>\r\n", "good.example"),
        (b"From: x@b\xc3\xbccher.example\r\n", "xn--bcher-kva.example"),
    ],
)
def test_from_domain(header: bytes, expected: str | None) -> None:
    message = header + b"Subject: x\r\n\r\nFrom: body@not-a-header.example\r\n"
    assert from_domain_of(message) == expected


def test_missing_or_repeated_from_is_a_dmarc_fail(keys: Keys) -> None:
    twice = make_message(extra=b"From: other@seller.example\r\n")
    for message in (twice, b"Subject: no from\r\n\r\nbody\r\n"):
        auth = check(message, zone(keys))
        assert (auth.from_domain, auth.aligned, auth.dmarc_result) == (None, False, "fail")


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


# -- real DNS client against a DNS server on loopback ---------------------------------------


class LoopbackDns:
    """A tiny authoritative DNS server on a free loopback UDP port, built with dnspython.

    Names in ``silent`` get no answer (a timeout); names in ``servfail`` get SERVFAIL.
    """

    def __init__(
        self,
        zone: dict[tuple[str, str], list[str]],
        *,
        silent: frozenset[str] = frozenset(),
        servfail: frozenset[str] = frozenset(),
    ) -> None:
        self.zone = {(n.lower(), t): v for (n, t), v in zone.items()}
        self.silent, self.servfail = silent, servfail
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            rtype = dns.rdatatype.to_text(question.rdtype)
            if name in self.silent:
                continue
            response = dns.message.make_response(query)
            if name in self.servfail:
                response.set_rcode(dns.rcode.SERVFAIL)
            elif (name, rtype) in self.zone:
                rdatas = [self.rdata_text(rtype, v) for v in self.zone[(name, rtype)]]
                response.answer.append(
                    dns.rrset.from_text_list(question.name, 60, "IN", rtype, rdatas)
                )
            elif not any(n == name for n, _ in self.zone):
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), peer)

    @staticmethod
    def rdata_text(rtype: str, value: str) -> str:
        if rtype != "TXT":
            return value
        # Real zones split long TXT values into 255-octet character-strings.
        return " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))

    def __enter__(self) -> LoopbackDns:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def test_dns_resolver_over_loopback() -> None:
    zone_data = {
        ("seller.example", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all", "other=" + "x" * 300],
        ("seller.example", "MX"): ["20 mx2.seller.example.", "10 mx1.seller.example."],
        ("mx1.seller.example", "A"): ["192.0.2.25"],
        ("mx1.seller.example", "AAAA"): ["2001:db8::25"],
        ("10.2.0.192.in-addr.arpa", "PTR"): ["mx1.seller.example."],
    }
    with LoopbackDns(zone_data, silent=frozenset({"slow.example"})) as server:
        resolver = DnsResolver(nameservers=["127.0.0.1"], port=server.port, timeout=0.5)
        assert sorted(resolver.txt("Seller.Example.")) == sorted(
            ["v=spf1 ip4:192.0.2.0/24 -all", "other=" + "x" * 300]
        )
        assert sorted(resolver.mx("seller.example")) == [
            (10, "mx1.seller.example"),
            (20, "mx2.seller.example"),
        ]
        assert resolver.a("mx1.seller.example") == ["192.0.2.25"]
        assert resolver.aaaa("mx1.seller.example") == ["2001:db8::25"]
        assert resolver.ptr("10.2.0.192.in-addr.arpa") == ["mx1.seller.example"]
        assert resolver.txt("missing.example") == []  # NXDOMAIN
        assert resolver.a("seller.example") == []  # no data of that type
        assert resolver.txt("a..b") == []  # not a DNS name
        started = time.monotonic()
        with pytest.raises(DnsTemporaryError):
            resolver.txt("slow.example")
        assert time.monotonic() - started < 2.0


def test_dns_resolver_servfail_is_temporary() -> None:
    with LoopbackDns({}, servfail=frozenset({"broken.example"})) as server:
        resolver = DnsResolver(nameservers=["127.0.0.1"], port=server.port, timeout=0.5)
        with pytest.raises(DnsTemporaryError):
            resolver.txt("broken.example")


def test_check_sender_with_real_dns_wire_format(keys: Keys) -> None:
    """SPF, a 2048-bit key split over two TXT strings, and DMARC, all through dnspython."""
    with LoopbackDns(zone(keys)) as server:
        resolver = DnsResolver(nameservers=["127.0.0.1"], port=server.port, timeout=1.0)
        auth = check_sender(
            sign(make_message(), keys),
            mail_from="bounce@seller.example",
            client_ip=SELLER_IP,
            helo="mx.seller.example",
            resolver=resolver,
        )
    assert (auth.spf, auth.dkim[0].result, auth.dmarc_result) == ("pass", "pass", "pass")
    assert auth.aligned


# -- upstream conformance vectors (not installed by the wheels: opt in with a path) ---------
#
# pyspf's and dkimpy's sdists carry the RFC 7208/4408 SPF test suites and the RFC 8463 example
# message, but their wheels do not install them and their files are not ours to commit. To run:
#   pip download --no-deps --no-binary :all: pyspf dkimpy && tar xzf ... && pip install pyyaml
#   MAILVEIL_SPF_SUITE_DIR=pyspf-2.0.14/test MAILVEIL_DKIMPY_TESTDATA=dkimpy-1.1.8/dkim/tests/data

SPF_SUITE_DIR = os.environ.get("MAILVEIL_SPF_SUITE_DIR", "")
DKIMPY_TESTDATA = os.environ.get("MAILVEIL_DKIMPY_TESTDATA", "")


class SuiteResolver:
    """The SPF suite's zonedata as a Resolver, with the suite driver's own conventions: SPF
    (type 99) records stand in for TXT when a name has none, TIMEOUT fails a lookup that has
    found nothing yet, names under error. time out, CNAMEs are followed."""

    def __init__(self, zonedata: dict[str, list[object]]) -> None:
        self.zone: dict[str, list[tuple[str, object]]] = {}
        for name, rrs in zonedata.items():
            out: list[tuple[str, object]] = []
            spf_only: list[object] = []
            for rr in rrs:
                if rr == "TIMEOUT":
                    out.append(("TIMEOUT", None))
                    continue
                assert isinstance(rr, dict)
                for rtype, value in rr.items():
                    if rtype in ("TXT", "SPF"):
                        value = (value,) if isinstance(value, str) else tuple(value)
                    if rtype == "SPF":
                        spf_only.append(value)
                    elif value != ("NONE",):
                        out.append((rtype, value))
            # As the suite's driver: SPF records stand in for TXT unless TXT is listed.
            if not any(t == "TXT" for rr in rrs if isinstance(rr, dict) for t in rr):
                out += [("TXT", v) for v in spf_only if v != ("NONE",)]
            self.zone[name.lower()] = out

    def get(self, name: str, rtype: str, depth: int = 0) -> list[object]:
        name = name.rstrip(".").lower()
        if name not in self.zone:
            if name.startswith("error."):
                raise DnsTemporaryError("timeout")
            return []
        found: list[object] = []
        for t, value in self.zone[name]:
            if t == "TIMEOUT" and not found:
                raise DnsTemporaryError("timeout")
            if t == rtype:
                if value == "TIMEOUT":
                    raise DnsTemporaryError("timeout")
                found.append(value)
        if not found and depth < 10:
            for t, value in self.zone[name]:
                if t == "CNAME":
                    return self.get(str(value), rtype, depth + 1)
        return found

    def txt(self, name: str) -> list[str]:
        return ["".join(v) for v in self.get(name, "TXT") if isinstance(v, tuple)]

    def a(self, name: str) -> list[str]:
        return [str(v) for v in self.get(name, "A")]

    def aaaa(self, name: str) -> list[str]:
        return [str(v) for v in self.get(name, "AAAA")]

    def mx(self, name: str) -> list[tuple[int, str]]:
        return [(int(v[0]), str(v[1])) for v in self.get(name, "MX")]  # type: ignore[index]

    def ptr(self, name: str) -> list[str]:
        return [str(v) for v in self.get(name, "PTR")]


@pytest.mark.skipif(not SPF_SUITE_DIR, reason="MAILVEIL_SPF_SUITE_DIR not set (pyspf sdist test/)")
@pytest.mark.parametrize("suite", ["rfc7208-tests.yml", "rfc4408-tests.yml"])
def test_spf_conformance_suite(suite: str) -> None:
    from mailveil.relay.spf_check import check_spf

    yaml = pytest.importorskip("yaml")
    failures = []
    count = 0
    with open(Path(SPF_SUITE_DIR) / suite, "rb") as fh:
        for scenario in yaml.safe_load_all(fh):
            resolver = SuiteResolver(scenario["zonedata"])
            for test_id, case in scenario["tests"].items():
                expected = case["result"]
                expected = [expected] if isinstance(expected, str) else expected
                result, _ = check_spf(
                    client_ip=case["host"],
                    mail_from=case.get("mailfrom", ""),
                    helo=case.get("helo", ""),
                    resolver=resolver,
                    deadline=time.monotonic() + 10,
                )
                count += 1
                if result not in expected:
                    failures.append((test_id, expected, result))
    assert count > 150
    assert failures == []


@pytest.mark.skipif(not DKIMPY_TESTDATA, reason="MAILVEIL_DKIMPY_TESTDATA not set")
def test_rfc8463_example_message() -> None:
    """RFC 8463's example: one Ed25519 and one RSA signature over the same message."""
    data = Path(DKIMPY_TESTDATA)
    records = {
        ("brisbane._domainkey.football.example.com", "TXT"): [
            "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
        ],
        ("test._domainkey.football.example.com", "TXT"): [
            (data / "test.txt").read_text().replace("\n", "")
        ],
    }
    message = (data / "rfc6376.signed.msg").read_bytes()
    auth = check_sender(
        message, mail_from="", client_ip=OTHER_IP, helo="h", resolver=StaticResolver(records)
    )
    assert [r.result for r in auth.dkim] == ["pass", "pass"]
    assert auth.aligned and auth.from_domain == "football.example.com"
    tampered = message.replace(b"hungry", b"angry")
    auth = check_sender(
        tampered, mail_from="", client_ip=OTHER_IP, helo="h", resolver=StaticResolver(records)
    )
    assert [r.result for r in auth.dkim] == ["fail", "fail"]
