"""Test kit for the relay server end to end: a seeded marketplace, the relay on a free loopback
port with its database work on the test's connection, an aiosmtpd sink as the smarthost, an
smtplib client, DKIM verification with dkimpy and the privacy invariant checked on every
message the sink received.

The fixtures built on it (``relay_settings``, ``relay``, ``refusing_relay``) live in
tests/relay/conftest.py; tests that need another relay call ``open_relay`` / ``logged_relay``.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import functools
import json
import logging
import smtplib
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
from relay_testkit import traces
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import world_kit as worlds
from mailveil.access.canaries import plant
from mailveil.auth.keys import Role, issue_key
from mailveil.config import Settings
from mailveil.contacts.customers import customer_address as stored_address
from mailveil.contacts.customers import update_customer
from mailveil.contacts.models import Alias, Customer, Principal
from mailveil.db.base import utcnow
from mailveil.demo.harness import free_port
from mailveil.ledger.models import LedgerEntry
from mailveil.ledger.signing import init_signing_key
from mailveil.relay.context import RelayContext
from mailveil.relay.dkim import DkimSigner, init_dkim_keys
from mailveil.relay.messages import init_verp_key
from mailveil.relay.models import RelayMessage
from mailveil.relay.sender_auth import Resolver, StaticResolver
from mailveil.relay.server import RelayThread
from mailveil.runtime import Runtime
from mailveil.vault import init_keys
from smtp_kit import Received, Sink

SECRET_DOMAIN = worlds.SECRET_DOMAIN
SPOOF_DOMAIN = "no-spf-mailbox.example"
# A customer whose provider signs with DKIM but publishes an SPF that fails for us.
DKIM_DOMAIN = "dkim-mailbox.example"
DKIM_SELECTOR = "s1"
SELLER_DOMAIN = "acme-books.example"
RIVAL_DOMAIN = "rival-shop.example"
STRANGER_DOMAIN = "stranger.example"
CLIENT_HELO = "client.example"


customer_address = worlds.address


SELLER_ADDRESS = f"sales@{SELLER_DOMAIN}"
SELLER_OTHER_ADDRESS = f"owner.private@{SELLER_DOMAIN}"
RIVAL_ADDRESS = f"owner@{RIVAL_DOMAIN}"
AGENT_ADDRESS = "agent.one@support.market.example"
STRANGER_ADDRESS = f"spammer@{STRANGER_DOMAIN}"


RIVAL_DKIM_SELECTOR = "r1"


def customer_dkim_key() -> tuple[bytes, str]:
    """(private key PEM, public key base64) for the DKIM customer's domain; made once."""
    return dkim_key(DKIM_DOMAIN)


@functools.cache
def dkim_key(domain: str) -> tuple[bytes, str]:
    """(private key PEM, public key base64) for ``domain``'s DKIM; made once per domain."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, base64.b64encode(der).decode("ascii")


def customer_dkim_sign(data: bytes) -> bytes:
    """``data`` signed by the DKIM customer's provider (d= its domain)."""
    return dkim_sign(data, DKIM_DOMAIN, DKIM_SELECTOR)


def dkim_sign(data: bytes, domain: str, selector: str) -> bytes:
    """``data`` signed for ``domain`` (its key from ``dkim_key``, published by dns_records)."""
    pem, _ = dkim_key(domain)
    signature = dkim.sign(
        data,
        selector.encode(),
        domain.encode(),
        pem,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return signature + data


def dns_records() -> dict[tuple[str, str], list[str]]:
    allow = "v=spf1 ip4:127.0.0.0/8 -all"
    return {
        (DKIM_DOMAIN, "TXT"): ["v=spf1 -all"],
        (f"{DKIM_SELECTOR}._domainkey.{DKIM_DOMAIN}", "TXT"): [
            f"v=DKIM1; k=rsa; p={customer_dkim_key()[1]}"
        ],
        # The seller's servers are 127.0.0.1 only: a client on 127.0.0.2 fails SPF.
        (SELLER_DOMAIN, "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
        (RIVAL_DOMAIN, "TXT"): [allow],
        (f"{RIVAL_DKIM_SELECTOR}._domainkey.{RIVAL_DOMAIN}", "TXT"): [
            f"v=DKIM1; k=rsa; p={dkim_key(RIVAL_DOMAIN)[1]}"
        ],
        (STRANGER_DOMAIN, "TXT"): [allow],
        (SECRET_DOMAIN, "TXT"): [allow],
        (SPOOF_DOMAIN, "TXT"): ["v=spf1 -all"],
        (f"_dmarc.{SECRET_DOMAIN}", "TXT"): ["v=DMARC1; p=reject"],
    }


# ------------------------------------------------------------------------ the marketplace


@dataclass
class World:
    """Rows the tests write through: customers, principals, aliases, keys."""

    customers: dict[str, Customer] = field(default_factory=dict)
    principals: dict[str, Principal] = field(default_factory=dict)
    aliases: dict[tuple[str, str], Alias] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    real: dict[str, str] = field(default_factory=dict)  # customer name -> real address

    def alias(self, customer: str, principal: str) -> str:
        return self.aliases[(customer, principal)].address

    def reverse(self, customer: str, principal: str) -> str:
        return self.aliases[(customer, principal)].reverse_address

    @property
    def customer_addresses(self) -> list[str]:
        return list(self.real.values())

    @property
    def principal_addresses(self) -> list[str]:
        return [SELLER_ADDRESS, SELLER_OTHER_ADDRESS, RIVAL_ADDRESS, AGENT_ADDRESS]


def build_world(session: Session, runtime: Runtime) -> World:
    vault = runtime.vault
    world = World()
    for name, n, domain in (
        ("alice", 1, SECRET_DOMAIN),
        ("bob", 2, SECRET_DOMAIN),
        ("carol", 3, SECRET_DOMAIN),
        ("dave", 4, SPOOF_DOMAIN),
        ("erin", 5, DKIM_DOMAIN),
    ):
        world.real[name] = customer_address(n, domain)
        world.customers[name] = worlds.customer(
            session, vault, n, external_id=f"cust-{name}", email=world.real[name], country="DE"
        )
    update_customer(session, world.customers["bob"].id, opt_outs=["seller_unsolicited"])
    world.principals["acme"] = worlds.seller(
        session,
        external_id="acme",
        display_name="Acme Books",
        attributes={"sending_addresses": [SELLER_ADDRESS], "sending_domains": [SELLER_DOMAIN]},
    )
    world.principals["rival"] = worlds.seller(
        session,
        external_id="rival",
        display_name="Rival Shop",
        attributes={"sending_addresses": [RIVAL_ADDRESS]},
    )
    world.principals["agent"] = worlds.employee(
        session,
        external_id="agent-1",
        display_name="Support Agent",
        attributes={
            "team": "support",
            "role": "agent",
            "region": "eu",
            "delivery_address": AGENT_ADDRESS,
        },
    )
    placed = utcnow() - dt.timedelta(days=2)
    orders = {
        ("alice", "acme"): "shipped",
        ("bob", "acme"): "shipped",
        ("carol", "acme"): "placed",
        ("dave", "acme"): "delivered",
        ("erin", "acme"): "delivered",
        ("alice", "rival"): "delivered",
    }
    for (c, p), status in orders.items():
        worlds.order(
            session,
            world.customers[c],
            world.principals[p],
            ext=f"ord-{c}-{p}",
            status=status,
            placed_at=placed,
        )
    worlds.case(session, world.customers["alice"], world.principals["agent"], case_ext="case-alice")
    for (c, p), purpose in {
        **{pair: "order" for pair in orders},
        ("alice", "agent"): "support",
    }.items():
        world.aliases[(c, p)] = worlds.disclosed(
            session,
            worlds.parts_of(runtime),
            world.customers[c],
            world.principals[p],
            purpose=purpose,
            ref=f"ord-{c}-{p}",
        )
    for p, role in (("acme", Role.SELLER), ("rival", Role.SELLER), ("agent", Role.EMPLOYEE)):
        world.keys[p] = issue_key(session, role, principal_id=world.principals[p].id, label=p).token
    world.keys["admin"] = issue_key(session, Role.ADMIN, label="admin").token
    session.commit()
    return world


# ------------------------------------------------------------------------- TLS certificate


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost and its key, as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "relay.crt", directory / "relay.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


# ----------------------------------------------------------------------------- messages


def message(
    *,
    from_: str,
    to: str,
    subject: str = "About your order",
    body: str = "Hello,\n\nyour parcel is on its way.\n",
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = from_
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Tue, 01 Oct 2024 10:00:00 +0200"
    msg["Message-ID"] = "<original-1@client.example>"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes(policy=email.policy.SMTP)


def parsed(data: bytes) -> EmailMessage:
    out = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(out, EmailMessage)
    return out


# ------------------------------------------------------------------------------- the relay


@dataclass
class Relay:
    runtime: Runtime
    world: World
    sink: Sink
    server: RelayThread
    resolver: StaticResolver
    session_factory: sessionmaker[Session]
    cert: Path | None = None

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def verp_key(self) -> bytes:
        return self.server.ctx.verp_key

    def client(
        self, *, tls: bool = False, token: str | None = None, source: str | None = None
    ) -> smtplib.SMTP:
        client = smtplib.SMTP(
            "127.0.0.1",
            self.port,
            local_hostname=CLIENT_HELO,
            timeout=15,
            source_address=(source, 0) if source else None,
        )
        client.ehlo()
        if tls:
            assert self.cert is not None
            context = ssl.create_default_context(cafile=str(self.cert))
            client.starttls(context=context)
            client.ehlo()
        if token is not None:
            client.login("anything", token)
        return client

    def send(
        self,
        data: bytes,
        *,
        mail_from: str,
        rcpt: str,
        token: str | None = None,
        tls: bool = False,
        source: str | None = None,
    ) -> tuple[int, str]:
        """One transaction; the first non-success reply (or DATA's) as (code, text)."""
        with self.client(tls=tls, token=token, source=source) as client:
            return transaction(client, mail_from, rcpt, data)

    def ledger(self, kind: str | None = None) -> list[dict[str, Any]]:
        self.server.flush()
        with self.session_factory() as session:
            stmt = select(LedgerEntry).order_by(LedgerEntry.seq)
            if kind is not None:
                stmt = stmt.where(LedgerEntry.kind == kind)
            return [
                {
                    "seq": e.seq,
                    "kind": e.kind,
                    "actor": e.actor,
                    "subject": e.subject,
                    "alias": e.alias,
                    "purpose": e.purpose,
                    "ref": e.ref,
                    "detail": json.loads(e.detail),
                    "leaf": e.leaf,
                }
                for e in session.scalars(stmt)
            ]

    def relay_messages(self) -> list[RelayMessage]:
        self.server.flush()
        with self.session_factory() as session:
            return list(session.scalars(select(RelayMessage).order_by(RelayMessage.id)))

    def delivered(self) -> list[Received]:
        return self.sink.messages


def transaction(client: smtplib.SMTP, mail_from: str, rcpt: str, data: bytes) -> tuple[int, str]:
    code, text = client.mail(mail_from)
    if code != 250:
        return code, text.decode()
    code, text = client.rcpt(rcpt)
    if code not in (250, 251):
        client.rset()
        return code, text.decode()
    code, text = client.data(data)
    return code, text.decode()


def reply_of(code: int, text: str) -> str:
    """``"550 5.7.1 ..."`` as the relay's ``str(Reply)``."""
    return f"{code} {text}"


def verify_dkim(data: bytes, signer: DkimSigner) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature, against the relay's published records."""
    records = {name.encode(): value.encode() for name, value in signer.dns_records().items()}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.rstrip(b"."), b"")

    verifier = dkim.DKIM(data)
    count = data.lower().split(b"\r\n\r\n", 1)[0].count(b"dkim-signature:")
    return [verifier.verify(idx=i, dnsfunc=dnsfunc) for i in range(count)]


def check_privacy(relay: Relay) -> None:
    """The invariant, on every message the smarthost received: a customer never gets a
    principal's real address, a principal never gets a customer's (in any byte, header,
    encoding or envelope)."""
    customers = {a.lower() for a in relay.world.customer_addresses}
    for item in relay.delivered():
        rcpt = item.rcpt_tos[0].lower()
        hidden = (
            relay.world.principal_addresses if rcpt in customers else relay.world.customer_addresses
        )
        wire = f"MAIL FROM:<{item.mail_from}>\r\n".encode() + item.data
        for address in hidden:
            found = traces(wire, address)
            assert not found, f"{address} leaked to the other side in {found}"
    # No customer's real address in the ledger, ever.
    for entry in relay.ledger():
        for address in relay.world.customer_addresses:
            assert address.lower() not in entry["leaf"].lower(), entry["kind"]


def open_relay(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    *,
    tls: bool = False,
    dns: dict[tuple[str, str], list[str]] | None = None,
    resolver_wrap: Callable[[StaticResolver], Resolver] | None = None,
    **overrides: Any,
) -> Iterator[Relay]:
    """The relay on the test's connection; ``dns``: records beside ``dns_records()``;
    ``resolver_wrap``: what the relay asks instead of the static resolver (a DNS outage)."""
    sink = Sink(port=free_port()).start()
    cert = key = None
    if tls:
        cert, key = self_signed(tmp_path)
        overrides.update(relay_tls_cert=str(cert), relay_tls_key=str(key))
    settings = settings.with_overrides(smarthost_port=sink.port, **overrides)
    init_keys(settings)
    init_signing_key(settings)
    init_dkim_keys(settings)
    init_verp_key(settings)
    engine = session_factory.kw["bind"].engine
    runtime = Runtime.open(settings, engine=engine, session_factory=session_factory)
    with session_factory() as session:
        world = build_world(session, runtime)
    resolver = StaticResolver({**dns_records(), **(dns or {})})
    ctx = RelayContext.load(
        runtime, resolver=resolver_wrap(resolver) if resolver_wrap else resolver
    )
    server = RelayThread(ctx)
    server.start()
    relay = Relay(runtime, world, sink, server, resolver, session_factory, cert)
    try:
        yield relay
    finally:
        server.stop()
        sink.stop()
    check_privacy(relay)


def logged_relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    **overrides: Any,
) -> Iterator[Relay]:
    """``open_relay`` with every log record checked for real addresses afterwards."""
    caplog.set_level(logging.DEBUG)
    yield from open_relay(relay_settings, session_factory, tmp_path, **overrides)
    assert_no_addresses_logged(caplog, relay_settings)


def plant_canary(relay: Relay, principal: str = "agent") -> tuple[int, str]:
    """A canary disclosed to ``principal`` (committed): its customer id and real address."""
    with relay.session_factory() as session:
        [canary] = plant(
            session,
            settings=relay.settings,
            vault=relay.runtime.vault,
            ledger=relay.runtime.ledger,
            principal_id=relay.world.principals[principal].id,
            country="DE",
            count=1,
        )
        real = stored_address(session, relay.runtime.vault, canary)
        session.commit()
    return canary.id, real


def assert_no_addresses_logged(caplog: pytest.LogCaptureFixture, settings: Settings) -> None:
    secrets = [customer_address(n).lower() for n in range(1, 6)] + [
        customer_address(5, DKIM_DOMAIN).lower(),
        SELLER_ADDRESS,
        SELLER_OTHER_ADDRESS,
        RIVAL_ADDRESS,
        customer_address(4, SPOOF_DOMAIN).lower(),
    ]
    for record in caplog.records:
        text = record.getMessage().lower()
        for secret in secrets:
            assert secret.lower() not in text, f"{record.name} logged a real address"


__all__ = [
    "CLIENT_HELO",
    "RIVAL_ADDRESS",
    "SELLER_ADDRESS",
    "SELLER_OTHER_ADDRESS",
    "STRANGER_ADDRESS",
    "Relay",
    "World",
    "check_privacy",
    "logged_relay",
    "message",
    "open_relay",
    "parsed",
    "plant_canary",
    "reply_of",
    "transaction",
    "verify_dkim",
]
