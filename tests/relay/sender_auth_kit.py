"""Helpers for the sender-authentication tests: test keys for the "seller" domains, messages
signed by dkimpy's own signer, the seller zone, a DNS server on loopback and the SPF suite's
zone as a Resolver.

Addresses use the reserved example domains and TEST-NET IPs (RFC 2606, RFC 5737): they are
only strings here; the only packets sent go to the loopback DNS server.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time

import dkim
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mailveil.relay.dkim import RSA_SHA256, DkimKey, DkimSigner, _fields_hash
from mailveil.relay.sender_auth import (
    DnsTemporaryError,
    SenderAuth,
    StaticResolver,
    check_sender,
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


def sign_without_from(message: bytes, keys: Keys) -> bytes:
    """A valid signature whose h= leaves From out (dkimpy's signer refuses to make one, so
    this drives the same header construction our signer uses, with another field list)."""
    key = serialization.load_pem_private_key(keys.rsa_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signer = DkimSigner("seller.example", [DkimKey(RSA_SHA256, "s1", key)])
    headers, body = dkim.rfc822_parse(message)
    policy = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    body_hash = base64.b64encode(hashlib.sha256(policy.canonicalize_body(body)).digest())
    fields = [b"subject", b"date"]
    header = signer._one(
        dkim,
        signer.keys[0],
        _fields_hash(dkim, headers, fields),
        fields,
        body_hash,
        str(int(time.time())).encode(),
        b"\r\n",
    )
    return header + message


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
