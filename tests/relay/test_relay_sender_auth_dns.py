"""The real DNS client (dnspython) against a DNS server on loopback, and opt-in runs of the
upstream conformance vectors (RFC 7208/4408 SPF suites, RFC 8463 example message).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sender_auth_kit import (
    OTHER_IP,
    SELLER_IP,
    Keys,
    LoopbackDns,
    SuiteResolver,
    make_message,
    sign,
    zone,
)

from mailveil.relay.sender_auth import (
    DnsResolver,
    DnsTemporaryError,
    StaticResolver,
    check_sender,
)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


# -- real DNS client against a DNS server on loopback ---------------------------------------


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
