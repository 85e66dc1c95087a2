"""Fixtures for relay tests: a real aiosmtpd server on a free loopback port and raw clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
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
