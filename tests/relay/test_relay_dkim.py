"""DKIM signing of outgoing mail: real keys on disk, real signatures, dkimpy as the verifier.

DNS is the only thing not real: dkimpy asks a StaticResolver that serves the signer's own
dns_records().
"""

from __future__ import annotations

import base64
import re
import stat
from pathlib import Path

import dkim
import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from mailveil.config import Settings
from mailveil.keyfiles import KeyFileError
from mailveil.relay import dkim as dkim_module
from mailveil.relay.dkim import (
    ED25519_SHA256,
    RSA_SHA256,
    DkimError,
    DkimSigner,
    ed25519_key_path,
    init_dkim_keys,
    rsa_key_path,
    zone_line,
)
from mailveil.relay.dkim_verify import verify_dkim
from mailveil.relay.dns import StaticResolver

BODY = b"Hello,\r\n\r\nyour parcel left our warehouse today.  Tracking: 1Z999.\r\n" * 30
MESSAGE = (
    b"From: Seller Shop <r-7f3a@relay.mailveil.localhost>\r\n"
    b"To: c-19ab@relay.mailveil.localhost\r\n"
    b"Subject: Your order 1234 has shipped\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <abc.123@relay.mailveil.localhost>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Mailer: should not be signed\r\n"
    b"\r\n" + BODY
)


@pytest.fixture
def signer(settings: Settings) -> DkimSigner:
    init_dkim_keys(settings)
    return DkimSigner.load(settings)


def resolver_for(signer: DkimSigner) -> StaticResolver:
    return StaticResolver({(name, "TXT"): [value] for name, value in signer.dns_records().items()})


def dkimpy_verify(message: bytes, resolver: StaticResolver) -> list[bool]:
    """dkimpy's own verifier over every signature in the message."""

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        records = resolver.txt(name.decode())
        return records[0].encode() if records else None

    def one(verifier: dkim.DKIM, idx: int) -> bool:
        try:
            return bool(verifier.verify(idx=idx, dnsfunc=dnsfunc))
        except dkim.ValidationError as exc:  # dkimpy raises on a body hash mismatch
            assert "body hash mismatch" in str(exc)
            return False

    verifier = dkim.DKIM(message)
    count = sum(1 for n, _ in verifier.headers if n.lower() == b"dkim-signature")
    return [one(verifier, i) for i in range(count)]


def signature_tags(signed: bytes) -> list[dict[bytes, bytes]]:
    headers, _ = dkim.rfc822_parse(signed)
    return [
        dkim.util.parse_tag_value(value)
        for name, value in headers
        if name.lower() == b"dkim-signature"
    ]


# -- keys ---------------------------------------------------------------------------------


def test_init_creates_both_keys_0600_and_is_idempotent(settings: Settings) -> None:
    first = init_dkim_keys(settings)
    paths = [ed25519_key_path(settings), rsa_key_path(settings)]
    contents = [p.read_bytes() for p in paths]
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.keys_dir.stat().st_mode) & 0o077 == 0

    second = init_dkim_keys(settings)
    assert second == first
    assert [p.read_bytes() for p in paths] == contents
    assert len(first) == 2
    assert first[0].startswith(f"mv-ed._domainkey.{settings.relay_domain}. IN TXT ")
    assert first[1].startswith(f"mv-rsa._domainkey.{settings.relay_domain}. IN TXT ( ")


def test_selectors_come_from_settings(settings: Settings) -> None:
    custom = settings.with_overrides(dkim_selector_ed25519="ed2026", dkim_selector_rsa="rsa2026")
    init_dkim_keys(custom)
    records = DkimSigner.load(custom).dns_records()
    assert set(records) == {
        f"ed2026._domainkey.{settings.relay_domain}",
        f"rsa2026._domainkey.{settings.relay_domain}",
    }
    # A new selector is a new key beside the old ones (rotation), never an overwrite.
    assert ed25519_key_path(custom) != ed25519_key_path(settings)


def test_bad_selector_is_refused(settings: Settings) -> None:
    with pytest.raises(DkimError):
        init_dkim_keys(settings.with_overrides(dkim_selector_rsa="bad selector;"))


def test_dns_records_publish_the_public_keys(signer: DkimSigner, settings: Settings) -> None:
    records = signer.dns_records()
    ed = records[f"mv-ed._domainkey.{settings.relay_domain}"]
    rsa_rec = records[f"mv-rsa._domainkey.{settings.relay_domain}"]
    assert ed.startswith("v=DKIM1; k=ed25519; p=")
    assert len(base64.b64decode(ed.split("p=")[1])) == 32
    assert rsa_rec.startswith("v=DKIM1; k=rsa; p=")
    pub = dkim.crypto.parse_public_key(base64.b64decode(rsa_rec.split("p=")[1]))
    assert pub["modulus"].bit_length() == 2048


def test_load_refuses_missing_or_exposed_keys(settings: Settings) -> None:
    with pytest.raises(KeyFileError):
        DkimSigner.load(settings)
    init_dkim_keys(settings)
    rsa_key_path(settings).chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        DkimSigner.load(settings)


def test_zone_line_splits_long_values_into_character_strings() -> None:
    line = zone_line("s._domainkey.example.org", "v=DKIM1; p=" + "A" * 600)
    strings = re.findall(r'"([^"]*)"', line)
    assert [len(s) for s in strings] == [255, 255, 101]
    assert "".join(strings) == "v=DKIM1; p=" + "A" * 600
    assert zone_line("a.example", "short") == 'a.example. IN TXT "short"'


# -- signing ------------------------------------------------------------------------------


def test_sign_prepends_two_signatures_that_dkimpy_verifies(
    signer: DkimSigner, settings: Settings
) -> None:
    signed = signer.sign(MESSAGE)
    assert signed.endswith(MESSAGE)
    assert signed.startswith(b"DKIM-Signature: ")
    tags = signature_tags(signed)
    assert [t[b"a"] for t in tags] == [ED25519_SHA256, RSA_SHA256]
    assert [t[b"s"] for t in tags] == [b"mv-ed", b"mv-rsa"]
    for t in tags:
        assert t[b"c"] == b"relaxed/relaxed"
        assert t[b"d"] == settings.relay_domain.encode()
        signed_fields = [f.strip() for f in t[b"h"].split(b":")]
        assert signed_fields == [
            b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
            b"content-type", b"from",
        ]  # fmt: skip
    assert dkimpy_verify(signed, resolver_for(signer)) == [True, True]


def test_our_verifier_agrees(signer: DkimSigner) -> None:
    results, skipped = verify_dkim(
        signer.sign(MESSAGE), resolver=resolver_for(signer), deadline=float("inf")
    )
    assert [r.result for r in results] == ["pass", "pass"]
    assert skipped == 0


def test_threading_headers_are_signed_when_present(signer: DkimSigner) -> None:
    reply = MESSAGE.replace(
        b"MIME-Version",
        b"Reply-To: r-7f3a@relay.mailveil.localhost\r\nIn-Reply-To: <x@y>\r\n"
        b"References: <w@y> <x@y>\r\nMIME-Version",
    )
    signed = signer.sign(reply)
    fields = [f.strip() for f in signature_tags(signed)[0][b"h"].split(b":")]
    assert {b"reply-to", b"in-reply-to", b"references"} <= set(fields)
    assert b"x-mailer" not in fields
    assert dkimpy_verify(signed, resolver_for(signer)) == [True, True]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: m.replace(b"Tracking: 1Z999", b"Tracking: 1Z998", 1), id="body"),
        pytest.param(lambda m: m + b"appended line\r\n", id="body-appended"),
        pytest.param(lambda m: m.replace(b"has shipped", b"was lost"), id="subject"),
        pytest.param(lambda m: m.replace(b"Seller Shop", b"Your Bank"), id="from-display-name"),
        pytest.param(lambda m: m.replace(b"10:00:00", b"11:00:00"), id="date"),
    ],
)
def test_tampering_breaks_both_signatures(signer: DkimSigner, tamper: object) -> None:
    signed = signer.sign(MESSAGE)
    assert callable(tamper)
    assert dkimpy_verify(tamper(signed), resolver_for(signer)) == [False, False]


@pytest.mark.parametrize("where", ["top", "after-signed-from", "bottom"])
def test_a_second_from_breaks_both_signatures(signer: DkimSigner, where: str) -> None:
    signed = signer.sign(MESSAGE)
    extra = b"From: Attacker <evil@attacker.example>\r\n"
    head, body = signed.split(b"\r\n\r\n", 1)
    if where == "top":
        forged = extra + signed
    elif where == "bottom":
        forged = head + b"\r\n" + extra.rstrip(b"\r\n") + b"\r\n\r\n" + body
    else:
        forged = signed.replace(b"\r\nTo: ", b"\r\n" + extra + b"To: ", 1)
    assert dkimpy_verify(forged, resolver_for(signer)) == [False, False]


def test_relaxed_canonicalisation_survives_refolding(signer: DkimSigner) -> None:
    signed = signer.sign(MESSAGE)
    refolded = signed.replace(b"Subject: Your order 1234", b"Subject:   Your order\r\n\t 1234")
    refolded = refolded.replace(b"warehouse today.", b"warehouse   today.  ")
    assert dkimpy_verify(refolded, resolver_for(signer)) == [True, True]


def test_wrong_public_key_fails(signer: DkimSigner, settings: Settings, tmp_path: Path) -> None:
    other_settings = settings.with_overrides(data_dir=tmp_path / "other")
    init_dkim_keys(other_settings)
    other = DkimSigner.load(other_settings)
    assert dkimpy_verify(signer.sign(MESSAGE), resolver_for(other)) == [False, False]


@pytest.mark.parametrize("algorithm", [ED25519_SHA256, RSA_SHA256])
def test_header_is_byte_identical_to_dkimpy_sign(
    signer: DkimSigner, settings: Settings, algorithm: bytes
) -> None:
    """Only the private-key operation differs from dkimpy (OpenSSL instead of Python
    integers); for the same time stamp the signature header must be the same bytes."""
    key = next(k for k in signer.keys if k.algorithm == algorithm)
    if algorithm == RSA_SHA256:
        private = rsa_key_path(settings).read_bytes()
    else:
        private = base64.b64encode(ed25519_key_path(settings).read_bytes())
    fields = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version"]
    reference = dkim.DKIM(MESSAGE).sign(
        key.selector.encode(),
        settings.relay_domain.encode(),
        private,
        signature_algorithm=algorithm,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[*fields, b"content-type", b"from"],
    )
    stamp = int(re.search(rb"t=(\d+)", reference).group(1))  # type: ignore[union-attr]
    mine = DkimSigner(settings.relay_domain, [key]).signature_headers(MESSAGE, timestamp=stamp)
    assert mine == [reference]


def test_lf_only_message_gets_lf_signature_lines(signer: DkimSigner) -> None:
    lf_message = MESSAGE.replace(b"\r\n", b"\n")
    signed = signer.sign(lf_message)
    assert b"\r" not in signed
    assert dkimpy_verify(signed, resolver_for(signer)) == [True, True]


def test_unsignable_messages_raise_dkim_error(signer: DkimSigner) -> None:
    with pytest.raises(DkimError, match="no From"):
        signer.sign(b"To: a@b.example\r\nSubject: x\r\n\r\nbody\r\n")
    with pytest.raises(DkimError, match="malformed"):
        signer.sign(b"From: a@b.example\r\nthis is not a header\r\n\r\nbody\r\n")


_PARTS = st.sampled_from(
    [b"From: a@b.example", b"Subject: x", b" folded", b"\tfolded", b"", b"body", b"x\r", b"y\n"]
)


@examples(max_examples=300, deadline=None)
@given(st.lists(_PARTS, max_size=8), st.sampled_from([b"\r\n", b"\n"]))
def test_header_section_parsed_alone_reads_as_dkimpy_reads_the_message(
    lines: list[bytes], end: bytes
) -> None:
    """The signer parses a CRLF message's header section alone (not splitting the body into
    lines and joining them again); what it reads is what dkimpy's parser reads."""
    message = end.join(lines) + end
    try:
        expected = dkim.rfc822_parse(message)
    except Exception as exc:  # dkimpy's own failure (not only MessageFormatError): the same
        with pytest.raises(type(exc)):
            dkim_module._parse(dkim, message)
        return
    assert dkim_module._parse(dkim, message) == expected


_BODY_PARTS = st.sampled_from([b"word", b" ", b"  ", b"\t", b"\r\n", b"\n", b"\r", b"x y"])


@examples(max_examples=400, deadline=None)
@given(st.lists(_BODY_PARTS, max_size=12))
def test_relaxed_body_is_dkimpys(parts: list[bytes]) -> None:
    """The signer skips dkimpy's white-space rewrites where they would change nothing; the
    canonical body is still exactly dkimpy's."""
    body = b"".join(parts)
    policy = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    assert dkim_module._relaxed_body(dkim, body) == policy.canonicalize_body(body)


_HEADER_PARTS = st.sampled_from([b"v", b" ", b"  ", b"\t", b"\r\n", b"\n", b"\r", b"\r\n "])


@examples(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"Subject", b"FROM ", b"x"]), st.lists(_HEADER_PARTS, max_size=8)
        )
    )
)
def test_relaxed_headers_are_dkimpys(fields: list[tuple[bytes, list[bytes]]]) -> None:
    headers = [(name, b"".join(parts)) for name, parts in fields]
    policy = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    assert dkim_module._relaxed_headers(dkim, headers) == policy.canonicalize_headers(headers)
