"""Fixtures for relay tests: a real aiosmtpd server on a free loopback port and raw clients;
a private Postfix smarthost relaying into a sink the tests read (``postfix_smarthost``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest
from postfix_harness import Smarthost, need, postfix_installed, running_smarthost
from relay_testkit import RawClient, RunningServer, running_server


@pytest.fixture
def smtp_server() -> Iterator[RunningServer]:
    with running_server() as server:
        yield server


@pytest.fixture
def raw_client(smtp_server: RunningServer) -> Iterator[Callable[[], RawClient]]:
    clients: list[RawClient] = []

    def connect() -> RawClient:
        client = RawClient(smtp_server.host, smtp_server.port)
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
