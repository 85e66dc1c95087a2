"""Fixtures for relay tests: the relay on the test's connection with a sink as its smarthost
(``relay_settings``, ``relay``, ``refusing_relay``; see relay_server_kit), raw-socket
clients of that relay (``raw_client``); a private Postfix smarthost relaying into a
sink the tests read (``postfix_smarthost``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from journal_kit import customer_and_seller
from postfix_harness import Smarthost, need, postfix_installed, running_smarthost
from relay_server_kit import Relay, logged_relay
from relay_testkit import RawClient
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings


@pytest.fixture
def raw_client(relay: Relay) -> Iterator[Callable[[], RawClient]]:
    """Raw-socket clients of the ``relay`` fixture's server, closed after the test."""
    clients: list[RawClient] = []

    def connect() -> RawClient:
        client = RawClient("127.0.0.1", relay.port)
        clients.append(client)
        code, _ = client.reply()
        assert code == 220
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def _postfix_session() -> Iterator[Smarthost]:
    need("Debian's postfix", postfix_installed())
    with running_smarthost() as smarthost:
        yield smarthost


@pytest.fixture
def postfix_smarthost(_postfix_session: Smarthost) -> Smarthost:
    """A private Postfix on a free loopback port relaying everything into ``.sink``.

    One instance serves the whole session (start-up costs about half a second); each test
    gets the sink emptied and accepting everything again.
    """
    _postfix_session.sink.clear()
    return _postfix_session


@pytest.fixture(scope="session")
def swaks_path() -> str:
    found = shutil.which("swaks")
    need("Debian's swaks", found is not None)
    assert found is not None
    return found


@pytest.fixture
def relay_settings(settings: Settings) -> Settings:
    return settings.with_overrides(
        relay_host="127.0.0.1",
        relay_port=0,
        relay_allow_plain_auth_on_loopback=True,
        smarthost_host="127.0.0.1",
        smarthost_timeout=5.0,
        smarthost_pool_size=2,
        relay_timeout_seconds=10.0,
    )


@pytest.fixture
def relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Relay]:
    yield from logged_relay(relay_settings, session_factory, tmp_path, caplog)


@pytest.fixture
def refusing_relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Relay]:
    """A relay that refuses strangers at aliases (``relay_stranger_action = "refuse"``)."""
    yield from logged_relay(
        relay_settings, session_factory, tmp_path, caplog, relay_stranger_action="refuse"
    )


@pytest.fixture
def ids(settings: Settings, session_factory: sessionmaker[Session]) -> tuple[int, int]:
    """(customer id, seller id) of a committed pair, for the journal's tests."""
    return customer_and_seller(settings, session_factory)
