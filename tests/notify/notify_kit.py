"""Test kit for notifications: a marketplace with a notification service, customers and
facts, mailveil's relay on a free loopback port with an aiosmtpd sink as its smarthost.

Its fixtures are registered for the notification tests in tests/notify/conftest.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

import world_kit as world
from dbkit import private_pg_engine
from mailveil.config import Settings
from mailveil.contacts.models import Customer, Principal
from mailveil.contacts.principals import create_principal
from mailveil.db.base import utcnow
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory
from mailveil.demo.harness import free_port
from mailveil.ledger.signing import init_signing_key
from mailveil.notify.facts import ingest_batch
from mailveil.notify.templates import register_template
from mailveil.relay.context import RelayContext
from mailveil.relay.dkim import init_dkim_keys
from mailveil.relay.messages import init_verp_key
from mailveil.relay.sender_auth import StaticResolver
from mailveil.relay.server import RelayThread
from mailveil.runtime import Runtime
from mailveil.vault import init_keys

SERVICE = "registry-notifier"
MAIL_DOMAIN = "people.example"

GIFT_TEMPLATE: dict[str, Any] = {
    "name": "registry-gift",
    "category": "transactional",
    "subject": "Someone bought a gift from your registry",
    "body": (
        "Hello,\n\nsomeone bought {{ facts.gift.item }} from your registry "
        "{{ facts.gift.registry_id }}.\n\nYour marketplace\n"
    ),
    "sensitivity": ["pregnancy"],
    "suppression_list": "baby-registry",
    "reviewer": "Rita Reviewer",
    "owner": SERVICE,
    "expected_volume": 100,
    "rule": {
        "require": [{"kind": "registry.gift_purchased", "as": "gift", "within_days": 7}],
        "owns": [{"fact": "gift", "attr": "registry_id", "kind": "registry.created"}],
    },
}
SORRY_TEMPLATE: dict[str, Any] = {
    "name": "registry-gift-correction",
    "category": "transactional",
    "subject": "About our earlier message",
    "body": "Hello,\n\nplease disregard our earlier message about a gift. We are sorry.\n",
    "owner": SERVICE,
    # No rule: a correction's audience is the ledger's record of who got the original.
}


# The relay decides a service's contact at RCPT with the disclosure rules but no template
# (one alias serves all of a service's templates). The shipped services.cedar now says the
# same as this operator override (a service owning a template may reach its aliases at the
# relay); the tests keep their own copy so a change to the shipped file is a visible one.
SERVICES_CEDAR = r"""// Notification services reach customers for the templates they own.
// At the relay (no template known at RCPT) a service that still owns a
// template may reach its aliases.

@id("service-owned-template")
@reason("the service owns the template named by the request")
@deny_reason("template {template} is not owned by this service")
permit (
  principal is Mailveil::Service,
  action == Mailveil::Action::"disclose",
  resource is Mailveil::Customer
)
when {
  if context has template
  then principal.templates.contains(context.template)
  else !principal.templates.isEmpty()
};

@id("service-purpose")
@reason("a service is only given aliases for purpose \"notification\"")
forbid (principal is Mailveil::Service, action == Mailveil::Action::"disclose", resource)
unless { context.purpose == "notification" };
"""


def policy_dir(base: Path) -> str:
    base.mkdir(parents=True, exist_ok=True)
    (base / "services.cedar").write_text(SERVICES_CEDAR, encoding="utf-8")
    return str(base)


def address(n: int) -> str:
    return f"person.{n}@{MAIL_DOMAIN}"


class Sink:
    """A smarthost that keeps what it receives (aiosmtpd on a free loopback port)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: SmtpSession, envelope: Envelope) -> str:
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.messages.append((rcpt.lower(), envelope.original_content or b""))
        return "250 2.0.0 stored"

    def recipients(self) -> list[str]:
        with self.lock:
            return [r for r, _ in self.messages]

    def subjects(self) -> list[str]:
        with self.lock:
            return [
                str(message_from_bytes(d, policy=default_policy)["Subject"])
                for _, d in self.messages
            ]


@dataclass
class NotifyEnv:
    runtime: Runtime
    session_factory: sessionmaker[Session]
    sink: Sink
    relay: RelayThread | None
    service: Principal
    customers: dict[int, Customer] = field(default_factory=dict)
    opened: list[Session] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def session(self) -> Session:
        """A session closed when the test ends (an open one would block dropping the
        PostgreSQL schema)."""
        opened = self.session_factory()
        self.opened.append(opened)
        return opened

    def customer(self, n: int) -> Customer:
        return self.customers[n]

    def delivered_numbers(self) -> list[int]:
        """Which customers (by their number) the sink got mail for."""
        by_address = {address(n).lower(): n for n in self.customers}
        return sorted(by_address[r] for r in self.sink.recipients())

    def flush(self) -> None:
        if self.relay is not None:
            self.relay.flush()


def add_customers(session: Session, runtime: Runtime, numbers: range) -> dict[int, Customer]:
    records = ((n, {"external_id": f"c{n}", "email": address(n), "country": "DE"}) for n in numbers)
    rows = world.imported_customers(session, runtime.vault, records)
    return {int(c.external_id[1:]): c for c in rows}


def gift_facts(numbers: list[int], *, days_ago: float = 1.0) -> list[dict[str, Any]]:
    at = (utcnow() - timedelta(days=days_ago)).isoformat()
    out: list[dict[str, Any]] = []
    for n in numbers:
        out.append(
            {
                "id": f"reg-{n}",
                "kind": "registry.created",
                "customer": f"c{n}",
                "time": at,
                "attributes": {"registry_id": f"R{n}"},
            }
        )
        out.append(
            {
                "id": f"gift-{n}",
                "kind": "registry.gift_purchased",
                "customer": f"c{n}",
                "time": at,
                "attributes": {"registry_id": f"R{n}", "item": "a teddy bear"},
            }
        )
    return out


def add_facts(session: Session, facts: list[dict[str, Any]]) -> None:
    results = ingest_batch(session, list(enumerate(facts, start=1)))
    assert all(r.status != "error" for r in results), [r for r in results if r.error][:3]
    session.commit()


def notify_settings(settings: Settings, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "relay_host": "127.0.0.1",
        "relay_port": 0,
        "relay_allow_plain_auth_on_loopback": True,
        "smarthost_host": "127.0.0.1",
        "smarthost_timeout": 5.0,
        "smarthost_pool_size": 2,
        "relay_timeout_seconds": 10.0,
        "notify_soak_seconds": 0.0,
        "notify_min_stage_size": 20,
        "notify_reconcile_after_seconds": 1.0,
        "policy_dir": policy_dir(settings.data_dir.parent / "policies"),
    }
    values.update(overrides)
    return settings.with_overrides(**values)


def open_env(
    settings: Settings,
    session_factory: sessionmaker[Session],
    customers: int = 10,
    *,
    relay: bool = True,
) -> Iterator[NotifyEnv]:
    sink = Sink()
    sink.controller.start()
    settings = settings.with_overrides(smarthost_port=sink.port)
    init_keys(settings)
    init_signing_key(settings)
    init_dkim_keys(settings)
    init_verp_key(settings)
    bind = session_factory.kw["bind"]
    bind = getattr(bind, "engine", bind)
    runtime = Runtime.open(settings, engine=bind, session_factory=session_factory)
    thread: RelayThread | None = None
    if relay:
        thread = RelayThread(RelayContext.load(runtime, resolver=StaticResolver({})))
        thread.start()
        runtime = Runtime.open(
            settings.with_overrides(notify_relay_port=thread.port),
            engine=bind,
            session_factory=session_factory,
        )
    with session_factory() as session:
        service = create_principal(
            session, kind="service", external_id=SERVICE, display_name="Registry notices"
        )
        people = add_customers(session, runtime, range(1, customers + 1))
        session.commit()
    env = NotifyEnv(runtime, session_factory, sink, thread, service, people)
    try:
        yield env
    finally:
        for opened in env.opened:
            opened.close()
        if thread is not None:
            thread.stop()
        sink.controller.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def notify_db(
    request: pytest.FixtureRequest, tmp_path: Path, _pg_available: bool
) -> Iterator[sessionmaker[Session]]:
    """A fresh migrated database per test with real, separate connections: the relay, the
    worker and the test each commit for real (savepoints on one shared connection would let
    the relay's background commits interleave with the worker's queries)."""
    if request.param == "sqlite":
        engine = make_engine(url=f"sqlite:///{tmp_path / 'notify.db'}")
        upgrade(engine)
        yield make_session_factory(engine)
        engine.dispose()
        return
    if not _pg_available:
        pytest.skip("PostgreSQL not reachable")
    with private_pg_engine("mv_notify") as engine:
        upgrade(engine)
        yield make_session_factory(engine)


@pytest.fixture
def notify_env(settings: Settings, notify_db: sessionmaker[Session]) -> Iterator[NotifyEnv]:
    yield from open_env(notify_settings(settings), notify_db)


def register(session: Session, env: NotifyEnv, data: dict[str, Any], **changes: Any) -> Any:
    row = register_template(session, env.settings, {**data, **changes}, actor="apikey:test")
    session.commit()
    return row


def suppress(session: Session, scope: str, customer_id: int) -> None:
    from mailveil.notify.models import Suppression

    session.add(Suppression(scope=scope, customer_id=customer_id, created_at=utcnow()))
    session.commit()


def age_attempts(session: Session, send_id: int, seconds: float) -> None:
    from mailveil.notify.models import Recipient

    session.execute(
        update(Recipient)
        .where(Recipient.send_id == send_id, Recipient.state == "delivering")
        .values(attempt_at=utcnow() - timedelta(seconds=seconds))
    )
    session.commit()


__all__ = [
    "GIFT_TEMPLATE",
    "SERVICE",
    "SORRY_TEMPLATE",
    "NotifyEnv",
    "Path",
    "add_customers",
    "add_facts",
    "address",
    "gift_facts",
    "notify_env",
    "notify_settings",
    "open_env",
    "register",
    "suppress",
]
