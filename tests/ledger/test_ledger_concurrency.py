"""Appenders on separate connections serialise on the head row and keep one valid chain."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from ledger_testkit import sample_events, signer_for
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.ledger.append import append, ledger_size
from mailveil.ledger.verify import verify_ledger

TABLES = ("ledger_entries", "ledger_checkpoints", "ledger_nodes", "ledger_head")


@pytest.fixture
def clean_ledger(engine: Engine) -> Iterator[Engine]:
    """This test commits for real; leave the shared database as it found it (empty)."""

    def wipe() -> None:
        with engine.begin() as conn:
            for table in TABLES:
                conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608

    with Session(engine) as probe:
        if ledger_size(probe):
            pytest.skip("the shared ledger is not empty")
    yield engine
    wipe()


def test_two_threads_appending_keep_a_valid_chain(clean_ledger: Engine, settings: Settings) -> None:
    engine = clean_ledger
    quick = settings.with_overrides(checkpoint_every_entries=25)
    signer = signer_for(quick)
    got: dict[str, list[int]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker(name: str) -> None:
        try:
            start.wait()
            for round_ in range(15):
                with Session(engine) as session, session.begin():
                    events = sample_events(1 + round_ % 4, round_)
                    got[name] += append(session, events, quick, signer)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    seqs = sorted(got["a"] + got["b"])
    assert seqs == list(range(len(seqs))) and not set(got["a"]) & set(got["b"])
    report = verify_ledger(engine, quick, signer.public_key, batch=10)
    assert report.ok, report.problems
    assert report.entries == len(seqs) and report.checkpoints == len(seqs) // 25
