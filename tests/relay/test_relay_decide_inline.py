"""Deciding on the event loop (``Database.run_inline``): a principal's own small message to a
customer is decided without a hop to a worker thread; anything that wants the database or DNS
goes to a thread and is decided exactly as before."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from relay_server_kit import SELLER_ADDRESS, Relay, message, parsed, verify_dkim
from sqlalchemy.orm import Session, sessionmaker

from mailveil.relay import codes
from mailveil.relay.dkim import DkimSigner
from mailveil.relay.handler import INLINE_DECIDE_BYTES
from mailveil.relay.journal import Database, NeedsIO
from mailveil.relay.models import RelayMessage


def _decided(relay: Relay) -> dict[str, int]:
    server = relay.server.server
    assert server is not None
    return dict(server.handler.decided)


def _send(relay: Relay, **kw: object) -> tuple[int, str]:
    w = relay.world
    alias = w.alias("alice", "acme")
    data = message(from_=f"Acme Books <{SELLER_ADDRESS}>", to=alias, subject="[shipping] P",
                   **kw)  # type: ignore[arg-type]  # fmt: skip
    return relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias, token=w.keys["acme"])


def test_an_authenticated_principals_message_is_decided_on_the_loop(relay: Relay) -> None:
    for _ in range(3):
        assert _send(relay) == (codes.QUEUED.code, codes.QUEUED.text)
    decided = _decided(relay)
    # The first may need the customer's data key from the database; then it is cached.
    assert sum(decided.values()) == 3 and decided.get("loop", 0) >= 2, decided
    delivered = relay.delivered()
    assert len(delivered) == 3
    signer = DkimSigner.load(relay.settings)
    for got in delivered:
        assert got.rcpt_tos == (relay.world.real["alice"],)
        assert parsed(got.data)["From"].addresses[0].addr_spec == relay.world.reverse(
            "alice", "acme"
        )
        assert verify_dkim(got.data, signer) == [True, True]
    assert len(relay.ledger("message")) == 3


def test_a_data_key_not_yet_cached_sends_the_message_to_a_thread(relay: Relay) -> None:
    """The customer's data key comes from the database once: that message is decided in a
    thread (from scratch: the loop's attempt stopped before it did anything), the next on the
    loop, and both are delivered alike."""
    assert _send(relay)[0] == codes.QUEUED.code
    relay.runtime.vault.forget_cached_keys()
    before = _decided(relay)
    assert _send(relay)[0] == codes.QUEUED.code
    middle = _decided(relay)
    assert middle.get("thread", 0) == before.get("thread", 0) + 1
    assert _send(relay)[0] == codes.QUEUED.code
    assert _decided(relay).get("loop", 0) == middle.get("loop", 0) + 1
    delivered = relay.delivered()
    assert [m.rcpt_tos for m in delivered] == [(relay.world.real["alice"],)] * 3
    assert len(relay.ledger("message")) == 3


def test_a_large_message_is_decided_in_a_thread(relay: Relay) -> None:
    _send(relay)  # the data key is cached from here on
    before = _decided(relay)
    body = "Your parcel is on its way.\n" * (INLINE_DECIDE_BYTES // 27 + 10)
    assert _send(relay, body=body)[0] == codes.QUEUED.code
    after = _decided(relay)
    assert after.get("thread", 0) == before.get("thread", 0) + 1


def test_a_sender_proved_by_spf_is_decided_in_a_thread(relay: Relay) -> None:
    """Not authenticated by SMTP AUTH: SPF/DKIM/DMARC need DNS, which must never block the
    event loop."""
    w = relay.world
    alias = w.alias("alice", "acme")
    data = message(from_=f"Acme Books <{SELLER_ADDRESS}>", to=alias, subject="[shipping] P")
    code, _ = relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias)
    assert code == codes.QUEUED.code
    assert _decided(relay) == {"thread": 1}


def test_run_inline_stops_at_the_first_database_use_whatever_catches_exceptions(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    db = Database(session_factory)
    steps: list[str] = []

    def wants_the_database(session: Session) -> str:
        steps.append("before")
        try:
            session.get(RelayMessage, 1)
        except Exception:  # code that handles its own failures must not swallow the stop
            steps.append("swallowed")
        steps.append("after")
        return "done"

    assert db.run_inline(wants_the_database) is None
    assert steps == ["before"]
    assert db.run_inline(lambda session: 42) == 42
    with pytest.raises(NeedsIO):
        raise NeedsIO("execute")
    assert not issubclass(NeedsIO, Exception)


def test_each_message_is_prescanned_once(relay: Relay, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DATA check scans the bytes within the limits before anything parses them; parsing
    then trusts that scan instead of running it again. A message parsed without the DATA
    check (quarantine release, a caller of its own) is still scanned."""
    from mailveil.relay import parse, prescan
    from mailveil.relay.errors import RelayRefusal

    scans: list[int] = []
    real = prescan.scan

    def counted(raw: bytes, *args: object, **kw: object) -> prescan.Tally:
        scans.append(len(raw))
        return real(raw, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(prescan, "scan", counted)
    monkeypatch.setattr(parse, "scan", counted)
    _send(relay)  # the data key is cached from here on
    scans.clear()
    assert _send(relay) == (codes.QUEUED.code, codes.QUEUED.text)
    assert len(scans) == 1
    assert len(relay.delivered()) == 2
    # Without the DATA check, parsing scans: a message over a scan limit is refused there.
    deep = message(from_=SELLER_ADDRESS, to="x@relay.example", subject="x")
    tight = dataclasses.replace(prescan.DEFAULT_LIMITS, max_received=0)
    with pytest.raises(RelayRefusal):
        parse.parse_message(b"Received: from a\r\n" + deep, tight)
    assert parse.parse_message(b"Received: from a\r\n" + deep, tight, scanned=True) is not None
