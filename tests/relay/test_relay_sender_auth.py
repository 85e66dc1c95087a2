"""Sender authentication: SPF (pyspf), DKIM (dkimpy), DMARC alignment and the relay's two
decisions built on them. DNS is a StaticResolver (the one thing mocked); signatures are real,
made by dkimpy's own signer with test keys for the "seller" domains.

Addresses use the reserved example domains and TEST-NET IPs (RFC 2606, RFC 5737): they are
only strings here, no packet is sent.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import dkim
import pytest
from sender_auth_kit import (
    OTHER_IP,
    SELLER_IP,
    Keys,
    check,
    der_integer,
    der_sequence,
    make_message,
    sign,
    sign_without_from,
    zone,
)

from mailveil.relay.dkim_verify import DkimResult
from mailveil.relay.dmarc import normalise_domain, organisational_domain, parse_dmarc
from mailveil.relay.sender_auth import (
    StaticResolver,
    check_sender,
    from_domain_of,
)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


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
