"""`mailveil events push`: the ledger's message events to a local webhook receiver; a
specific error without a URL and when the receiver is down (nothing lost: the next push
sends the same events)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cli_testkit import Cli
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.demo.harness import free_port
from mailveil.ledger.append import append
from mailveil.ledger.events import Event
from mailveil.ledger.signing import CheckpointSigner

SECRET = "cli-events-secret"


@pytest.fixture
def received() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/events", bodies
    server.shutdown()
    server.server_close()


def messages(db: sessionmaker[Session], settings: Settings, n: int) -> None:
    with db() as session:
        events = [
            Event(kind="message", actor="principal:1", subject=f"customer:{i}",
                  purpose="to_customer", detail={"relay_message": f"m{i}"})
            for i in range(n)
        ]  # fmt: skip
        append(session, events, settings, CheckpointSigner.load(settings))
        session.commit()


def test_push_needs_a_url(cli: Cli, cli_settings: Settings) -> None:
    run = cli("events", "push")
    assert run.code == 1
    assert "events_url is not set" in run.stderr


def test_push_sends_the_events_and_a_down_receiver_is_an_error(
    cli: Cli,
    cli_settings: Settings,
    db: sessionmaker[Session],
    received: tuple[str, list[dict[str, Any]]],
) -> None:
    messages(db, cli_settings, 3)
    down = {"MAILVEIL_EVENTS_URL": f"http://127.0.0.1:{free_port()}/events",
            "MAILVEIL_PLATFORM_WEBHOOK_SECRET": SECRET}  # fmt: skip
    run = cli("events", "push", env=down)
    assert run.code == 1
    assert "pushed 0 event(s); the receiver failed: error: ConnectError" in run.stdout
    url, bodies = received
    env = {"MAILVEIL_EVENTS_URL": url, "MAILVEIL_PLATFORM_WEBHOOK_SECRET": SECRET}
    # The failure backed the webhook off for 2 s: wait it out rather than sleep in a test.
    with db() as session:
        from mailveil.platform.models import EventDelivery

        row = session.get(EventDelivery, "webhook")
        assert row is not None and row.attempts == 1
        row.next_attempt_at = None
        session.commit()
    run = cli.ok("events", "push", env=env)
    assert "pushed 3 event(s)" in run.stdout
    assert [e["message"] for body in bodies for e in body["events"]] == ["m0", "m1", "m2"]
