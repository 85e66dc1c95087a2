"""API fixtures: the real app on the test's connection, an admin key, and helpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_testkit import Api
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from mailveil.api.app import create_app
from mailveil.auth.keys import Role, issue_key
from mailveil.config import Settings
from mailveil.ledger.signing import init_signing_key
from mailveil.runtime import Runtime
from mailveil.vault import init_keys


@pytest.fixture
def runtime(settings: Settings, session_factory: sessionmaker[Session]) -> Runtime:
    init_keys(settings)
    init_signing_key(settings)
    engine = session_factory.kw["bind"].engine
    return Runtime.open(settings, engine=engine, session_factory=session_factory)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def admin(client: TestClient, session_factory: sessionmaker[Session]) -> Api:
    with session_factory() as sess:
        token = issue_key(sess, Role.ADMIN, label="test admin").token
        sess.commit()
    return Api(client, token)


@pytest.fixture
def backend(admin: Api) -> Api:
    return admin.key_for("backend")


@pytest.fixture
def investigator(admin: Api) -> Api:
    return admin.key_for("investigator")
