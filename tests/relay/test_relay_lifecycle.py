"""Conversation lifecycles through the real relay: the order's contact window per status, the
``5.2.1`` "this conversation has ended" refusal (the same for every expired alias, whatever
became of its customer), the customer reopening it by writing, and the flood cap."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import relay_server_kit as kit
from relay_server_kit import SELLER_ADDRESS, Relay, message, parsed
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings, SettingsError, load_settings
from mailveil.contacts.aliases import revoke_alias
from mailveil.contacts.customers import delete_customer, update_customer
from mailveil.contacts.lifecycle import (
    Lifecycle,
    conversation,
    parse_windows,
    transition_order,
)
from mailveil.contacts.models import Order
from mailveil.db.base import utcnow
from mailveil.errors import Conflict
from mailveil.relay import codes
from mailveil.relay.models import RelayBounceMark


def said(code: int, text: str) -> str:
    return f"{code} {text}"


def seller_sends(
    relay: Relay, customer: str, subject: str = "[shipping] Update", **headers: str
) -> str:
    alias = relay.world.alias(customer, "acme")
    data = message(from_=SELLER_ADDRESS, to=alias, subject=subject, headers=headers)
    code, text = relay.send(
        data, mail_from=SELLER_ADDRESS, rcpt=alias, token=relay.world.keys["acme"]
    )
    return said(code, text)


def customer_writes(relay: Relay, customer: str) -> str:
    w = relay.world
    rcpt = w.reverse(customer, "acme")
    data = message(from_=w.real[customer], to=rcpt, subject="Re: my order")
    code, text = relay.send(data, mail_from=w.real[customer], rcpt=rcpt)
    return said(code, text)


def order_of(session: Session, relay: Relay, customer: str) -> Order:
    order = session.scalar(
        select(Order).where(Order.customer_id == relay.world.customers[customer].id)
    )
    assert order is not None
    return order


def age_order(relay: Relay, customer: str, status: str, days_ago: float) -> None:
    """Move the customer's order with acme to ``status``, entered ``days_ago`` days ago."""
    with relay.session_factory() as session:
        order = order_of(session, relay, customer)
        order.status = status
        order.status_changed_at = utcnow() - dt.timedelta(days=days_ago)
        session.commit()


# ------------------------------------------------------------------------ the functions


def test_windows_parse_and_name_bad_settings() -> None:
    windows = parse_windows(load_settings(env={}).lifecycle_windows)
    assert windows["delivered"] == dt.timedelta(days=30)
    for bad in ("placed=1", "nope=3,placed=1", "placed=x", "placed=-1"):
        with pytest.raises(SettingsError):
            parse_windows(bad)
    with pytest.raises(SettingsError, match="platform_webhook_secret"):
        load_settings(env={}, veto_url="http://127.0.0.1:9/veto")


def test_a_customer_message_reopens_an_ended_conversation() -> None:
    life = Lifecycle.from_settings(load_settings(env={}))
    now = utcnow()
    entered = now - dt.timedelta(days=31)
    assert not conversation(life, "delivered", entered, None).open_at(now)
    talk = conversation(life, "delivered", entered, now - dt.timedelta(days=1))
    assert talk.open_at(now)
    assert talk.open_until == now - dt.timedelta(days=1) + life.reopen
    assert not conversation(life, "closed", now, None).open_at(now)


def test_transitions_follow_the_order_and_name_the_next_statuses(relay: Relay) -> None:
    with relay.session_factory() as session:
        order = order_of(session, relay, "carol")  # placed
        assert transition_order(session, order.id, to="paid").status == "paid"
        with pytest.raises(Conflict, match="next statuses: shipped, cancelled, closed"):
            transition_order(session, order.id, to="delivered")
        transition_order(session, order.id, to="closed")
        with pytest.raises(Conflict, match="closed"):
            transition_order(session, order.id, to="returned")
        session.rollback()


# ------------------------------------------------------------------------ through the relay


def test_expired_conversation_is_refused_at_rcpt_and_recorded(relay: Relay) -> None:
    assert seller_sends(relay, "alice") == str(codes.QUEUED)
    age_order(relay, "alice", "delivered", days_ago=31)  # past the 30-day return window
    assert seller_sends(relay, "alice") == str(codes.CONVERSATION_ENDED)
    assert str(codes.CONVERSATION_ENDED).startswith("550 5.2.1 This conversation has ended")
    [entry] = relay.ledger("message_refused")
    assert entry["detail"]["stage"] == "rcpt"
    assert entry["detail"]["reply"] == "550 5.2.1"
    assert len(relay.delivered()) == 1


def test_closing_the_order_ends_the_conversation_and_the_customer_reopens_it(
    relay: Relay,
) -> None:
    with relay.session_factory() as session:
        transition_order(session, order_of(session, relay, "alice").id, to="closed")
        session.commit()
    assert seller_sends(relay, "alice") == str(codes.CONVERSATION_ENDED)
    # The customer writes: the conversation is open again, the seller can answer.
    assert customer_writes(relay, "alice") == str(codes.QUEUED)
    relay.server.flush()
    issued = parsed(relay.delivered()[0].data)["Message-ID"]
    # A closed order lists no reasons: the seller answers in the customer's thread.
    assert seller_sends(relay, "alice", "Re: my order", **{"In-Reply-To": issued}) == str(
        codes.QUEUED
    )
    assert len(relay.delivered()) == 2


def test_unauthenticated_seller_is_refused_at_data(relay: Relay) -> None:
    """SPF vouches for the seller at DATA: the same refusal there."""
    age_order(relay, "alice", "shipped", days_ago=61)
    alias = relay.world.alias("alice", "acme")
    data = message(from_=SELLER_ADDRESS, to=alias, subject="[shipping] Update")
    code, text = relay.send(data, mail_from=SELLER_ADDRESS, rcpt=alias)
    assert said(code, text) == str(codes.CONVERSATION_ENDED)
    [entry] = relay.ledger("message_refused")
    assert entry["detail"]["stage"] == "data"


def test_expired_aliases_probed_in_bulk_all_answer_alike(relay: Relay) -> None:
    """Deleted, revoked, bouncing, opted-out or untouched: every expired alias gives the same
    reply, so probing them tells the seller nothing about the customers behind them."""
    w = relay.world
    for name in ("alice", "bob", "carol", "dave", "erin"):
        age_order(relay, name, "closed", days_ago=1)
    with relay.session_factory() as session:
        delete_customer(session, w.customers["carol"].id)
        revoke_alias(
            session, relay.runtime.ledger,
            address=w.alias("dave", "acme"), reason="test", actor="test",
        )  # fmt: skip
        session.add(RelayBounceMark(customer_id=w.customers["erin"].id, hard_bounces=9,
                                    marked_at=utcnow()))  # fmt: skip
        update_customer(session, w.customers["alice"].id, opt_outs=["seller_unsolicited"])
        session.commit()
    replies = set()
    with relay.client(token=w.keys["acme"]) as client:
        for _ in range(3):
            for name in ("alice", "bob", "carol", "dave", "erin"):
                client.mail(SELLER_ADDRESS)
                code, text = client.rcpt(w.alias(name, "acme"))
                replies.add(said(code, text.decode()))
                client.rset()
    assert replies == {str(codes.CONVERSATION_ENDED)}
    assert relay.delivered() == []


@pytest.fixture
def capped_relay(
    relay_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> Iterator[Relay]:
    yield from kit.open_relay(relay_settings, session_factory, tmp_path, lifecycle_flood_limit=2)


def test_a_seller_flooding_one_customer_is_deferred(capped_relay: Relay) -> None:
    relay = capped_relay
    assert seller_sends(relay, "alice") == str(codes.QUEUED)
    assert seller_sends(relay, "alice") == str(codes.QUEUED)
    relay.server.flush()
    assert seller_sends(relay, "alice") == str(codes.TOO_MANY_TO_CUSTOMER)
    assert seller_sends(relay, "dave", "[delivery] Delivered") == str(codes.QUEUED)
    refused = relay.ledger("message_refused")
    assert [e["detail"]["reply"] for e in refused] == ["450 4.7.1"]


def test_each_settings_object_has_its_own_parsed_lifecycle() -> None:
    """The relay reads the lifecycle settings twice per message: parsed once per settings
    object and found by identity, each settings object still gets its own."""
    from mailveil.relay.lifecycle import lifecycle_for

    first = load_settings(env={}, lifecycle_reopen_days=3.0)
    other = load_settings(env={}, lifecycle_reopen_days=5.0, lifecycle_enabled=False)
    assert lifecycle_for(first) is lifecycle_for(first)
    assert lifecycle_for(first).reopen == dt.timedelta(days=3)
    assert lifecycle_for(other).reopen == dt.timedelta(days=5)
    assert lifecycle_for(other).enabled is False and lifecycle_for(first).enabled is True
