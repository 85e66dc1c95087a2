"""Alert webhooks against a real HTTP receiver on loopback: the receiver checks the HMAC
signature, refuses the first deliveries, then takes them; nothing is lost in between (the
outbox keeps them across a restart), and no body carries an address.

The halted send is a real one: a send through mailveil's relay (notify_kit) whose first
stage fails its ineligible gate, on SQLite and PostgreSQL; the alert is raised from the
``send_halted`` ledger entry the worker's halt writes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from ops_kit import kit
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.contacts.principals import create_principal
from mailveil.detect.models import Signal
from mailveil.detect.signals import record_signal
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.models import LedgerEntry
from mailveil.ledger.signing import init_signing_key
from mailveil.notify.audience import Entry
from mailveil.notify.queue import run_to_end
from mailveil.notify.sends import counts_of, create_send, get_send
from mailveil.ops import alerts
from mailveil.ops.metrics import Metrics
from mailveil.ops.models import OpsAlert
from mailveil.relay.detection import KIND_CANARY_HIT
from mailveil.witness.alerts import WitnessAlert, dispatch, record_alert

SECRET = "s3cret-for-the-webhook-test"


class Receiver:
    """A webhook receiver: answers 503 to the first ``fail_first`` posts, 200 after."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.posts: list[tuple[dict[str, str], bytes, bool]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                good = alerts.verify_signature(
                    SECRET, headers.get("x-mailveil-signature", ""), body
                )
                with receiver.lock:
                    receiver.posts.append((headers, body, good))
                    refuse = len(receiver.posts) <= receiver.fail_first or not good
                self.send_response(503 if refuse else 204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/mailveil"

    def accepted(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(b) for _h, b, good in self.posts[self.fail_first :] if good]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=3)
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


@pytest.fixture
def halt_env(settings: Settings, notify_db: sessionmaker[Session]) -> Iterator[kit.NotifyEnv]:
    """The notification world (relay on loopback, a sink, ten customers with addresses)."""
    yield from kit.open_env(kit.notify_settings(settings), notify_db)


def _halt_a_send(env: kit.NotifyEnv) -> int:
    """A send to ten customers of whom two hold the rule's facts: the worker delivers the
    first stage (all ten: the minimum stage is 20) and halts on the ineligible gate (0.8)."""
    session = env.session()
    kit.add_facts(session, kit.gift_facts([2, 5]))
    template = kit.register(session, env, kit.GIFT_TEMPLATE)
    entries = [Entry(f"c{n}", None) for n in sorted(env.customers)]
    send = create_send(session, env.settings, env.runtime.ledger, template=template,
                       entries=entries, actor="apikey:ops-test")  # fmt: skip
    session.commit()
    run_to_end(env.runtime, send.id)
    session.expire_all()
    assert get_send(session, send.id).status == "halted"
    return send.id


def _raise_four_alerts(session: Session, env: kit.NotifyEnv) -> int:
    """An incident, a halted send, a canary hit and a witness disagreement; the send's id."""
    ledger = env.runtime.ledger
    send_id = _halt_a_send(env)
    seller = create_principal(session, kind="seller", external_id="leaky-shop")
    signal = record_signal(
        session, ledger, kind="abuse_report", confidence="exact",
        summary="report about leaky.customer@example-mail.com", source_principal_id=seller.id,
    )  # fmt: skip
    assert signal.incident_id is not None
    # The shape relay.detection.canary_hit writes.
    ledger.append(session, [
        Event(KIND_CANARY_HIT, "unauthenticated", "customer:3", detail={
            "principal": f"principal:{seller.id}", "action": "quarantine", "sha256": "ab" * 32,
            "size": 120, "mail_from": "intruder@elsewhere.example",
        }),
    ])  # fmt: skip
    record_alert(
        session, ledger,
        WitnessAlert("witness.example/w1", "inconsistent", 40, 52, "not append-only"),
    )  # fmt: skip
    session.commit()
    return send_id


def test_alerts_are_signed_retried_and_survive_a_restart(
    halt_env: kit.NotifyEnv, receiver: Receiver
) -> None:
    env = halt_env
    session_factory = env.session_factory
    settings = env.settings.with_overrides(
        alert_webhook_url=receiver.url, alert_webhook_secret=SECRET, alert_retry_seconds=30
    )
    metrics = Metrics()
    send_id = _raise_four_alerts(env.session(), env)

    first = alerts.pump(session_factory, settings, metrics=metrics)
    assert first.enqueued == 4 and first.delivered == 1 and first.retrying == 3
    assert first.errors == ["HTTP 503"] * 3
    # A restart: nothing in memory survives, the outbox does. The retries wait their turn.
    again = alerts.pump(session_factory, settings)
    assert again.enqueued == 0 and again.delivered == 0
    soon = datetime.now(UTC) + timedelta(seconds=29)
    assert alerts.pump(session_factory, settings, now=soon).delivered == 0
    later = alerts.pump(session_factory, settings, metrics=metrics, now=soon + timedelta(seconds=2))
    assert later.delivered == 3 and later.retrying == 0

    got = receiver.accepted()
    assert sorted(a["alert"] for a in got) == [
        "canary_hit", "incident_opened", "send_halted", "witness_disagreement",
    ]  # fmt: skip
    assert all(good for _h, _b, good in receiver.posts), "every post was signed correctly"
    ids = [h["x-mailveil-alert-id"] for h, _b, _g in receiver.posts]
    assert len(set(ids)) == 4 and len(ids) == 7  # 3 refused, 4 taken; retries keep their id
    halted = next(a for a in got if a["alert"] == "send_halted")
    with session_factory() as s:
        [gate_signal] = s.scalars(select(Signal).where(Signal.kind == "send_gate_failed")).all()
        [entry] = s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "send_halted")).all()
        delivered = counts_of(s, send_id).get("delivered", 0)
    assert halted["ledger_seq"] == entry.seq and halted["ref"] == f"send:{send_id}"
    assert halted["facts"] == {
        "send": send_id, "template": "registry-gift", "version": 1, "stage": 0,
        "gate": "ineligible", "rate": 0.8, "threshold": settings.notify_max_ineligible_rate,
        "stage_recipients": 10, "delivered": delivered, "signal": gate_signal.id,
    }  # fmt: skip
    assert delivered == len(env.sink.recipients()) == 2
    assert halted["summary"] == (
        f"send {send_id} halted at stage 1 by its ineligible gate: rate 0.8 above "
        f"{settings.notify_max_ineligible_rate}"
    )
    witness = next(a for a in got if a["alert"] == "witness_disagreement")
    assert witness["facts"]["reason"] == "inconsistent" and witness["facts"]["witness_size"] == 52
    bodies = b"".join(b for _h, b, _g in receiver.posts).decode()
    assert "@" not in bodies  # neither the canary's intruder nor the report's customer
    assert kit.MAIL_DOMAIN not in bodies  # nor any of the send's recipients
    with session_factory() as s:
        states = s.scalars(select(OpsAlert.state)).all()
        assert sorted(states) == ["delivered"] * 4
    sample = metrics.registry.get_sample_value
    assert sample("mailveil_alerts_total", {"outcome": "delivered"}) == 4
    assert sample("mailveil_alerts_total", {"outcome": "retrying"}) == 3


def test_a_bad_signature_or_an_old_timestamp_is_refused_by_the_check() -> None:
    body = b'{"alert":"x"}'
    now = 1_800_000_000
    header = alerts.sign(SECRET, now, body)
    assert alerts.verify_signature(SECRET, header, body, now=now)
    assert not alerts.verify_signature(SECRET, header, body + b" ", now=now)
    assert not alerts.verify_signature("another-secret-entirely", header, body, now=now)
    assert not alerts.verify_signature(SECRET, header, body, now=now + 3600)
    assert not alerts.verify_signature(SECRET, "v1=deadbeef", body, now=now)


def test_given_up_alerts_stay_listed_and_can_be_retried(
    settings: Settings, session_factory: sessionmaker[Session], receiver: Receiver
) -> None:
    settings = settings.with_overrides(
        alert_webhook_url=receiver.url, alert_webhook_secret=SECRET, alert_max_attempts=1
    )
    init_signing_key(settings)
    ledger = Ledger.load(settings)
    with session_factory() as s:
        record_alert(s, ledger, WitnessAlert("w", "witness_ahead", 3, 9, "ahead"))
        s.commit()
    assert alerts.pump(session_factory, settings).failed == 1
    with session_factory() as s:
        [row] = alerts.list_alerts(s, state="failed")
        assert row.last_error == "HTTP 503" and row.attempts == 1
        assert alerts.retry_failed(s) == 1
        s.commit()
    receiver.fail_first = 1
    assert alerts.pump(session_factory, settings).delivered == 1


def test_the_witness_hook_delivers_at_once(
    settings: Settings, session_factory: sessionmaker[Session], receiver: Receiver
) -> None:
    receiver.fail_first = 0
    settings = settings.with_overrides(alert_webhook_url=receiver.url, alert_webhook_secret=SECRET)
    init_signing_key(settings)
    ledger = Ledger.load(settings)
    alert = WitnessAlert("w2", "untrusted_key", 5, None, "unknown key")
    with session_factory() as s:
        seq = record_alert(s, ledger, alert)
        s.commit()
    dispatch(alert, seq, deliver=lambda: alerts.pump(session_factory, settings))
    [got] = receiver.accepted()
    assert got["alert"] == "witness_disagreement" and got["ledger_seq"] == seq


def test_without_a_webhook_nothing_is_queued(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    init_signing_key(settings)
    ledger = Ledger.load(settings)
    with session_factory() as s:
        record_alert(s, ledger, WitnessAlert("w", "unknown_log", 1, None, "x"))
        s.commit()
    assert alerts.pump(session_factory, settings).enqueued == 0
