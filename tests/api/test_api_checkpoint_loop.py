"""`mailveil serve` signs a checkpoint every T seconds, so a quiet ledger still gets a fresh
signed root without waiting for N more entries."""

import time

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from mailveil.api.app import create_app
from mailveil.ledger.append import latest_checkpoint
from mailveil.ledger.events import Event
from mailveil.runtime import Runtime


def test_background_checkpoint_covers_new_entries(
    runtime: Runtime, session_factory: sessionmaker[Session]
) -> None:
    settings = runtime.settings.with_overrides(
        checkpoint_every_entries=1000, checkpoint_every_seconds=0.2
    )
    runtime.settings = settings
    with session_factory() as session:
        runtime.ledger.append(session, [Event(kind="test", subject="customer:1")] * 3)
        session.commit()
        assert latest_checkpoint(session) is None  # fewer than N entries, no time passed
    # The test shares one connection with the app, so it only looks once the loop has
    # stopped: reading while the loop writes would interleave their savepoints.
    with TestClient(create_app(runtime, background_checkpoints=True)):
        time.sleep(1.5)  # about seven ticks of the 0.2 s loop
    with session_factory() as session:
        checkpoint = latest_checkpoint(session)
    assert checkpoint is not None and checkpoint.tree_size == 3
