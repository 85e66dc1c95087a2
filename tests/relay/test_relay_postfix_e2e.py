"""End to end with real peers: swaks -> mailveil relay -> Debian's Postfix (the smarthost) ->
sink, both directions, and a bounce all the way round (Postfix's own DSN comes back to the
relay's VERP address, the relay tells the seller through Postfix).

Every delivered byte is checked for the other side's real address (the kit's
``check_privacy``, when each test ends), DKIM is verified with dkimpy on what Postfix
delivered, and no real address may be logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import relay_server_kit as kit
from postfix_harness import Smarthost, need, postfix_installed, running_smarthost, swaks
from relay_server_kit import SELLER_ADDRESS, Relay, message, parsed, verify_dkim
from relay_testkit import traces
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.demo.harness import free_port
from mailveil.ledger.signing import init_signing_key
from mailveil.relay.context import RelayContext
from mailveil.relay.dkim import DkimSigner, init_dkim_keys
from mailveil.relay.messages import init_verp_key, verify_bounce_local
from mailveil.relay.sender_auth import StaticResolver
from mailveil.relay.server import RelayThread
from mailveil.runtime import Runtime
from mailveil.vault import init_keys
from smtp_kit import Received

pytestmark = pytest.mark.slow  # a private Postfix and swaks, end to end


@pytest.fixture(scope="module")
def e2e_postfix(swaks_path: str) -> Iterator[tuple[Smarthost, int]]:
    """A Postfix that relays to its sink and sends mail for the relay domain (bounces to VERP
    addresses) back to the relay's port, chosen here so the route exists before the relay."""
    need("Debian's postfix", postfix_installed())
    relay_port = free_port()
    domain = Settings().relay_domain
    route = f"inline:{{ {domain}=smtp:[127.0.0.1]:{relay_port} }}"
    with running_smarthost(extra={"transport_maps": route}) as smarthost:
        yield smarthost, relay_port


@pytest.fixture
def pf_relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    e2e_postfix: tuple[Smarthost, int],
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Relay]:
    """The relay on the module's port with Postfix as its smarthost (kit.open_relay's set-up,
    with Postfix between the relay and the sink)."""
    caplog.set_level(logging.DEBUG)
    postfix, relay_port = e2e_postfix
    postfix.sink.clear()
    settings = relay_settings.with_overrides(
        relay_port=relay_port,
        smarthost_port=postfix.port,
        smarthost_timeout=10.0,
    )
    init_keys(settings)
    init_signing_key(settings)
    init_dkim_keys(settings)
    init_verp_key(settings)
    engine = session_factory.kw["bind"].engine
    runtime = Runtime.open(settings, engine=engine, session_factory=session_factory)
    with session_factory() as session:
        world = kit.build_world(session, runtime)
    resolver = StaticResolver(kit.dns_records())
    server = RelayThread(RelayContext.load(runtime, resolver=resolver))
    server.start()
    relay = Relay(runtime, world, postfix.sink, server, resolver, session_factory)
    try:
        yield relay
        postfix.postfix.wait_queue_empty()
    finally:
        server.stop()
    kit.check_privacy(relay)
    kit.assert_no_addresses_logged(caplog, settings)


def _swaks(relay: Relay, data: bytes, tmp_path: Path, *args: str) -> str:
    path = tmp_path / "message.eml"
    path.write_bytes(data)
    result = swaks(
        "--server", f"127.0.0.1:{relay.port}",
        "--helo", kit.CLIENT_HELO,
        "--data", str(path),
        *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _through_postfix(got: Received) -> None:
    """The sink got it from Postfix, which got it from the relay."""
    received = parsed(got.data).get_all("Received") or []
    assert "by smarthost.mailveil.localhost (Postfix)" in str(received[0])


def test_seller_to_customer_with_swaks_through_postfix(pf_relay: Relay, tmp_path: Path) -> None:
    w = pf_relay.world
    alias = w.alias("alice", "acme")
    data = message(
        from_=f"Acme Books <{SELLER_ADDRESS}>",
        to=alias,
        subject="[shipping] Your parcel",
        body=f"It left today. Write to {SELLER_ADDRESS} or reply.\n.\nA line with a dot.\n",
    )
    out = _swaks(
        pf_relay,
        data,
        tmp_path,
        "--from", SELLER_ADDRESS,
        "--to", alias,
        "--auth", "PLAIN",
        "--auth-user", "acme",
        "--auth-password", w.keys["acme"],
    )  # fmt: skip
    assert "250 2.0.0 Message accepted" in out
    (got,) = pf_relay.sink.wait_count(1)
    _through_postfix(got)
    assert got.rcpt_tos == (w.real["alice"],)
    local, _, domain = got.mail_from.partition("@")
    assert domain == pf_relay.settings.relay_domain
    assert verify_bounce_local(pf_relay.verp_key, local) is not None
    delivered = parsed(got.data)
    assert delivered["From"].addresses[0].addr_spec == w.reverse("alice", "acme")
    assert "A line with a dot." in delivered.get_content()
    assert verify_dkim(got.data, DkimSigner.load(pf_relay.settings)) == [True, True]
    assert traces(got.data, SELLER_ADDRESS) == []
    assert [r.status for r in pf_relay.relay_messages()] == ["delivered"]


def test_customer_reply_with_swaks_through_postfix(pf_relay: Relay, tmp_path: Path) -> None:
    w = pf_relay.world
    real, reverse = w.real["alice"], w.reverse("alice", "acme")
    data = message(
        from_=f"Alice <{real}>",
        to=reverse,
        subject=f"Re: [shipping] Your parcel ({real})",
        body=f"The box was damaged.\n\nAlice <{real}>\n",
        headers={"Reply-To": real, "X-Originating-IP": "[198.51.100.23]"},
    )
    out = _swaks(pf_relay, data, tmp_path, "--from", real, "--to", reverse)
    assert "250 2.0.0 Message accepted" in out
    (got,) = pf_relay.sink.wait_count(1)
    _through_postfix(got)
    assert got.rcpt_tos == (SELLER_ADDRESS,)
    delivered = parsed(got.data)
    assert delivered["From"].addresses[0].addr_spec == w.alias("alice", "acme")
    assert delivered["Reply-To"] is None and delivered["X-Originating-IP"] is None
    assert verify_dkim(got.data, DkimSigner.load(pf_relay.settings)) == [True, True]
    assert traces(got.data, real) == []


def test_bounce_comes_back_through_postfix_and_the_seller_is_told(
    pf_relay: Relay, tmp_path: Path, e2e_postfix: tuple[Smarthost, int]
) -> None:
    """The customer's mailbox refuses; Postfix returns its DSN to the VERP address, which it
    routes to the relay; the relay marks the message and tells the seller through Postfix."""
    w = pf_relay.world
    real, alias = w.real["alice"], w.alias("alice", "acme")
    pf_relay.sink.refuse_rcpt = lambda rcpt: (
        f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
        if rcpt.lower() == real.lower()
        else None
    )
    data = message(from_=f"Acme Books <{SELLER_ADDRESS}>", to=alias, subject="[shipping] Parcel")
    out = _swaks(
        pf_relay,
        data,
        tmp_path,
        "--from", SELLER_ADDRESS,
        "--to", alias,
        "--auth", "PLAIN",
        "--auth-user", "acme",
        "--auth-password", w.keys["acme"],
    )  # fmt: skip
    assert "250 2.0.0 Message accepted" in out  # Postfix took it; its delivery fails later
    (notice,) = pf_relay.sink.wait_count(1, timeout=30)
    assert notice.rcpt_tos == (SELLER_ADDRESS,)
    assert notice.mail_from == "<>"
    _through_postfix(notice)
    body = parsed(notice.data).get_content()
    assert f"Your message to {alias} could not be delivered" in " ".join(body.split())
    assert "5.1.1" in body
    assert traces(notice.data, real) == []
    assert b"private-mailbox.example" not in notice.data.lower()

    # The relay answers Postfix's DSN delivery only after its commit: once Postfix's queue is
    # empty the relay's work is done (the test must not share the connection before that).
    postfix = e2e_postfix[0].postfix
    postfix.wait_queue_empty()
    [row] = pf_relay.relay_messages()
    assert (row.status, row.status_code) == ("bounced", "5.1.1")
    [event] = pf_relay.ledger("bounce")
    assert event["detail"]["relay_message"] == row.token
    assert (event["detail"]["kind"], event["detail"]["result"]) == ("hard", "recorded")
    assert event["detail"]["notified"] is True
    assert event["subject"] == f"customer:{w.customers['alice'].id}"
    # Postfix's side of the story: the DSN went to the relay, which took it.
    verp = [line for line in postfix.log().splitlines() if "to=<bounce+" in line]
    assert verp and all("status=sent" in line for line in verp), verp
