"""What the demo runs on: a private data directory, the real relay on a loopback port, an
in-process mail sink as its smarthost (the customers' mailboxes), and a static DNS zone for
the demo's outside domains (their SPF and DKIM keys), since the demo may not use the
internet."""

from __future__ import annotations

import base64
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailveil.config import Settings, load_settings
from mailveil.db.migrate import upgrade
from mailveil.ledger.signing import init_signing_key
from mailveil.relay.context import RelayContext
from mailveil.relay.dkim import init_dkim_keys
from mailveil.relay.dns import StaticResolver
from mailveil.relay.messages import init_verp_key
from mailveil.relay.server import RelayThread
from mailveil.runtime import Runtime
from mailveil.vault import init_keys

LOOPBACK = "127.0.0.1"
SELECTOR = "demo"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class Delivered:
    mail_from: str
    rcpt: list[str]
    data: bytes

    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class MailSink:
    """The mailboxes of the world outside: every message the relay delivers lands here."""

    port: int = field(default_factory=free_port)
    received: list[Delivered] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.received.append(
                Delivered(
                    str(envelope.mail_from),
                    [str(r) for r in envelope.rcpt_tos],
                    bytes(envelope.original_content or b""),
                )
            )
        return "250 2.0.0 delivered"

    def start(self) -> MailSink:
        self._controller = Controller(self, hostname=LOOPBACK, port=self.port, ready_timeout=10)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def inbox(self, address: str) -> list[Delivered]:
        with self._lock:
            return [m for m in self.received if address.lower() in (r.lower() for r in m.rcpt)]

    def count(self) -> int:
        with self._lock:
            return len(self.received)


@dataclass
class SigningDomain:
    """An outside mail domain with its own DKIM key, published in the demo's DNS."""

    name: str
    pem: bytes
    public_b64: str

    @classmethod
    def make(cls, name: str) -> SigningDomain:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(name, pem, base64.b64encode(der).decode("ascii"))

    def sign(self, data: bytes) -> bytes:
        signature = dkim.sign(
            data,
            SELECTOR.encode(),
            self.name.encode(),
            self.pem,
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )
        return bytes(signature) + data

    def records(self) -> dict[tuple[str, str], list[str]]:
        return {
            (self.name, "TXT"): ["v=spf1 ip4:127.0.0.0/8 -all"],
            (f"{SELECTOR}._domainkey.{self.name}", "TXT"): [f"v=DKIM1; k=rsa; p={self.public_b64}"],
            (f"_dmarc.{self.name}", "TXT"): ["v=DMARC1; p=reject"],
        }


@dataclass
class DemoEnv:
    settings: Settings
    runtime: Runtime
    sink: MailSink
    relay: RelayThread
    domains: dict[str, SigningDomain]
    workdir: Path
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def start(
        cls,
        domains: list[str],
        *,
        workdir: Path | None = None,
        policy_files: dict[str, str] | None = None,
        **overrides: Any,
    ) -> DemoEnv:
        tmp = None
        if workdir is None:
            tmp = tempfile.TemporaryDirectory(prefix="mailveil-demo-")
            workdir = Path(tmp.name)
        policy_dir = workdir / "policies"
        policy_dir.mkdir(parents=True, exist_ok=True)
        for name, text in (policy_files or {}).items():
            (policy_dir / name).write_text(text, encoding="utf-8")
        sink = MailSink().start()
        settings = load_settings(
            env={},
            data_dir=workdir / "var",
            relay_port=free_port(),
            smarthost_host=LOOPBACK,
            smarthost_port=sink.port,
            smarthost_pool_size=4,
            relay_allow_plain_auth_on_loopback=True,
            policy_dir=str(policy_dir),
            log_json=False,
            **overrides,
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        init_keys(settings)
        init_signing_key(settings)
        init_dkim_keys(settings)
        init_verp_key(settings)
        runtime = Runtime.open(settings)
        upgrade(runtime.engine)
        signing = {name: SigningDomain.make(name) for name in domains}
        records: dict[tuple[str, str], list[str]] = {}
        for domain in signing.values():
            records.update(domain.records())
        relay = RelayThread(RelayContext.load(runtime, resolver=StaticResolver(records)))
        relay.start()
        return cls(settings, runtime, sink, relay, signing, workdir, tmp)

    def stop(self) -> None:
        self.relay.stop()
        self.sink.stop()
        self.runtime.engine.dispose()
        if self._tmp is not None:
            self._tmp.cleanup()


__all__ = ["Delivered", "DemoEnv", "MailSink", "SigningDomain", "free_port"]
