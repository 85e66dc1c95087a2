"""An operator's Cedar files in ``policy_dir`` change what the relay accepts, end to end over
real SMTP: a rule added in a file of its own, and the shipped messages.cedar replaced."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import relay_server_kit as kit
from relay_server_kit import SELLER_ADDRESS, Relay, message
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.relay import codes

NO_REVIEW_REQUESTS = """
@id("operator-no-review-requests")
@reason("this marketplace does not let sellers ask for reviews by mail")
forbid (principal is Mailveil::Seller, action == Mailveil::Action::"message", resource)
when { context.reason == "review_request" };
"""

ORDER_QUESTIONS_ANY_STATUS = """
@id("operator-order-questions")
@reason("sellers may ask about an order whatever its status")
permit (principal is Mailveil::Seller, action == Mailveil::Action::"message", resource)
when { context.reason == "order_question" && context has order_status };
"""


def shipped_messages_policy() -> str:
    return (
        resources.files("mailveil.policy")
        .joinpath("policies", "messages.cedar")
        .read_text(encoding="utf-8")
    )


def operator_relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    files: dict[str, str],
) -> Iterator[Relay]:
    folder = tmp_path / "policies"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    caplog.set_level(logging.DEBUG)
    yield from kit.open_relay(relay_settings, session_factory, tmp_path, policy_dir=str(folder))
    kit.assert_no_addresses_logged(caplog, relay_settings)


@pytest.fixture
def added_rule(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Relay]:
    files = {"no-review-requests.cedar": NO_REVIEW_REQUESTS}
    yield from operator_relay(relay_settings, session_factory, tmp_path, caplog, files)


@pytest.fixture
def replaced_rules(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Relay]:
    # The shipped rules without the opt-out, plus a permit of the operator's own.
    shipped = shipped_messages_policy()
    without_opt_out = shipped.split('@id("message-customer-opted-out")')[0]
    assert "message-customer-opted-out" not in without_opt_out
    files = {"messages.cedar": without_opt_out + ORDER_QUESTIONS_ANY_STATUS}
    yield from operator_relay(relay_settings, session_factory, tmp_path, caplog, files)


@pytest.fixture
def no_rules(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Relay]:
    yield from operator_relay(
        relay_settings, session_factory, tmp_path, caplog, {"messages.cedar": ""}
    )


def seller_sends(relay: Relay, customer: str, subject: str) -> str:
    alias = relay.world.alias(customer, "acme")
    code, text = relay.send(
        message(from_=SELLER_ADDRESS, to=alias, subject=subject),
        mail_from=SELLER_ADDRESS,
        rcpt=alias,
        token=relay.world.keys["acme"],
    )
    return f"{code} {text}"


def test_an_added_forbid_refuses_with_the_generic_reply_and_is_named(added_rule: Relay) -> None:
    # alice's order is shipped: review requests are allowed by the shipped rules.
    assert seller_sends(added_rule, "alice", "[review_request] Did you like it?") == str(
        codes.MESSAGE_NOT_ALLOWED
    )
    assert seller_sends(added_rule, "alice", "[shipping] On its way") == str(codes.QUEUED)
    # The shipped rules still decide what the operator's file does not speak of.
    assert seller_sends(added_rule, "bob", "[shipping] On its way") == str(codes.CUSTOMER_OPTED_OUT)
    assert len(added_rule.delivered()) == 1
    first, second = added_rule.ledger("message_refused")
    assert first["detail"]["policies"] == ["operator-no-review-requests"]
    assert first["detail"]["why"] == "this marketplace does not let sellers ask for reviews by mail"
    assert first["ref"] == "review_request"
    assert second["detail"]["policies"] == ["message-customer-opted-out"]


def test_a_replaced_file_changes_the_rules(replaced_rules: Relay) -> None:
    # bob opted out: without the shipped opt-out rule his seller's messages get through.
    assert seller_sends(replaced_rules, "bob", "[shipping] On its way") == str(codes.QUEUED)
    # alice's order is shipped: order questions are allowed only by the operator's permit.
    assert seller_sends(replaced_rules, "alice", "[order_question] Size?") == str(codes.QUEUED)
    # The rules kept from the shipped file still refuse with their own replies.
    assert seller_sends(replaced_rules, "alice", "[lottery] You won").startswith(
        str(codes.REASON_UNKNOWN) + "; allowed: "
    )
    assert seller_sends(replaced_rules, "alice", "Untagged") == str(codes.REASON_MISSING)
    assert [e["ref"] for e in replaced_rules.ledger("message")] == ["shipping", "order_question"]
    assert len(replaced_rules.delivered()) == 2


def test_an_empty_file_refuses_every_message(no_rules: Relay) -> None:
    assert seller_sends(no_rules, "alice", "[shipping] On its way") == str(codes.REASON_NOT_ALLOWED)
    assert seller_sends(no_rules, "carol", "[safety_recall] Stop using it") == str(
        codes.REASON_NOT_ALLOWED
    )
    assert no_rules.delivered() == []
    assert [e["detail"]["reply"] for e in no_rules.ledger("message_refused")] == ["550 5.7.1"] * 2
