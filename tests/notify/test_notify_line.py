"""The worker's line (``notify.line``): a group split between several SMTP connections, sent
at once, with one outcome; when one connection breaks mid-share, its message in flight is
neither delivered nor unsent (left ``delivering`` for reconciliation), the rest of its share
is unsent, and the other shares are delivered. Each message reaches the server at most once.
A real SMTP server (aiosmtpd, AUTH on) on loopback plays the relay."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.demo.harness import free_port
from mailveil.notify.line import Line
from mailveil.notify.transmit import Ready

CONNECTIONS = 4
BREAK_AFTER = 2  # messages the breaking connection takes before it drops


class Relay:
    """Counts messages per connection; the first connection to reach its third message
    drops it without an answer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.got: list[tuple[int, str]] = []  # (connection, recipient)
        self.peers: set[int] = set()
        self.broken: int | None = None

    async def handle_DATA(self, server: Any, session: SmtpSession, envelope: Envelope) -> str:
        conn = id(session)
        with self.lock:
            self.peers.add(conn)
            mine = sum(1 for c, _ in self.got if c == conn)
            if self.broken is None and mine == BREAK_AFTER:
                self.broken = conn
            if self.broken == conn:
                server.transport.close()
                return "421 4.3.0 gone"  # never reaches the client
            self.got.extend((conn, r) for r in envelope.rcpt_tos)
        return "250 2.0.0 ok"


def _auth(*_args: Any) -> AuthResult:
    return AuthResult(success=True)


@pytest.fixture
def relay() -> Iterator[tuple[Relay, int]]:
    handler = Relay()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, authenticator=_auth,
                            auth_require_tls=False)  # fmt: skip
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def test_a_group_split_between_connections_and_one_breaking(
    relay: tuple[Relay, int], settings: Settings
) -> None:
    handler, port = relay
    tuned = settings.with_overrides(
        notify_relay_host="127.0.0.1",
        notify_relay_port=port,
        notify_relay_starttls=False,
        relay_timeout_seconds=5.0,
    )
    engine = create_engine("sqlite://")
    runtime: Any = SimpleNamespace(settings=tuned, session_factory=None)
    session = Session(bind=engine)
    group = [Ready(rid, rid, f"a{rid}@relay.example", "s", "b", [], "https://u.example/x")
             for rid in range(1, 21)]  # fmt: skip
    wires = [(r, f"Subject: {r.recipient_id}\r\n\r\nhi\r\n".encode()) for r in group]
    line = Line(runtime, "token", "worker-1", session, CONNECTIONS)
    try:
        assert line.threaded
        out = line.send(wires, time.monotonic()).future.result(timeout=30)
    finally:
        line.close()
        session.close()
        engine.dispose()

    assert len(handler.peers) == CONNECTIONS  # every share on its own connection
    assert out.broken
    received = [r for _, r in handler.got]
    assert len(received) == len(set(received)), "a message reached the relay twice"
    sent = {int(r[1:].split("@")[0]) for r in received}
    assert set(out.delivered) == sent
    assert not out.failed and not out.deferred
    # The broken share: BREAK_AFTER delivered, one in flight (unknown), the rest unsent.
    in_flight = set(range(1, 21)) - sent - out.unsent
    assert len(in_flight) == 1 and not in_flight & set(out.delivered)
    assert len(out.unsent) == 20 // CONNECTIONS - BREAK_AFTER - 1
    assert len(sent) == 20 - 1 - len(out.unsent)
