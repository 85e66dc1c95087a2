"""The ledger's head gate (``HeadGate``): the appenders of one process take their turn in the
process, holding it until their transaction ends, so the database's queue for the head row
holds at most one of them. Real threads and connections, SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from ledger_testkit import sample_events, signer_for
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, writing
from mailveil.ledger.append import HeadGate, Ledger
from mailveil.ledger.verify import verify_ledger

WAIT = 10.0  # seconds a test waits for a thread it expects to finish


def _ledger(settings: Settings, wait_seconds: float = 5.0) -> Ledger:
    return Ledger(settings, signer_for(settings), HeadGate(wait_seconds))


def _append_in_thread(
    engine: Engine, ledger: Ledger, start: int
) -> tuple[threading.Thread, list[BaseException], threading.Event]:
    """Another appender: one event in a session of its own, committed; ``done`` once it is."""
    errors: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            with Session(engine) as s:
                ledger.append(s, sample_events(1, start))
                s.commit()
            done.set()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors, done


def _waiting_on_a_lock(engine: Engine) -> int:
    """Backends of this database waiting for a lock (PostgreSQL)."""
    with engine.connect() as c:
        return int(
            c.scalar(text("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a "
                          "ON a.pid = l.pid WHERE NOT l.granted "
                          "AND a.datname = current_database()"))
            or 0
        )  # fmt: skip


@pytest.mark.parametrize("end", ["commit", "rollback", "close"])
def test_a_second_appender_waits_in_the_process_until_the_first_transaction_ends(
    own_engine: Engine, settings: Settings, end: str
) -> None:
    ledger = _ledger(settings)
    first = Session(own_engine)
    ledger.append(first, sample_events(2))
    thread, errors, done = _append_in_thread(own_engine, ledger, 2)
    try:
        assert not done.wait(0.5), "the second appender went ahead while the first held the head"
        if own_engine.dialect.name == "postgresql":
            assert _waiting_on_a_lock(own_engine) == 0  # it waits in the process, not the database
        getattr(first, end)()
    finally:
        first.close()
    thread.join(WAIT)
    assert done.is_set() and not errors, errors
    kept = 3 if end == "commit" else 1
    report = verify_ledger(own_engine, settings, ledger.signer.public_key)
    assert report.ok and report.entries == kept, (report.problems, report.entries)


def test_one_transaction_appends_and_checkpoints_again_without_waiting_for_itself(
    own_engine: Engine, settings: Settings
) -> None:
    ledger = _ledger(settings, wait_seconds=30.0)
    started = time.monotonic()
    with Session(own_engine) as s:
        ledger.append(s, sample_events(1))
        with s.begin_nested():  # a savepoint's end does not give the turn away
            ledger.append(s, sample_events(1, 1))
        ledger.append(s, sample_events(1, 2))
        assert ledger.checkpoint_now(s) is not None
        s.commit()
    assert time.monotonic() - started < 5.0  # not the gate's 30 s wait
    with Session(own_engine) as s:  # the turn was given back when the transaction ended
        ledger.append(s, sample_events(1, 3))
        s.commit()
    report = verify_ledger(own_engine, settings, ledger.signer.public_key)
    assert report.ok and report.entries == 4, report.problems


def test_past_its_wait_an_appender_queues_in_the_database_and_the_chain_stays_whole(
    own_engine: Engine, settings: Settings
) -> None:
    ledger = _ledger(settings, wait_seconds=0.2)
    first = Session(own_engine)
    ledger.append(first, sample_events(1))
    thread, errors, done = _append_in_thread(own_engine, ledger, 1)
    try:
        if own_engine.dialect.name == "postgresql":
            deadline = time.monotonic() + WAIT
            while _waiting_on_a_lock(own_engine) == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _waiting_on_a_lock(own_engine) >= 1  # past the gate, at the head row's lock
        assert not done.is_set()
        first.commit()
    finally:
        first.close()
    thread.join(WAIT)
    assert done.is_set() and not errors, errors
    report = verify_ledger(own_engine, settings, ledger.signer.public_key)
    assert report.ok and report.entries == 2, report.problems


def test_on_sqlite_a_writer_holding_the_lock_never_waits_for_the_gate(
    tmp_path: Path, settings: Settings
) -> None:
    """SQLite's write lock serialises appenders already: a transaction that began IMMEDIATE
    (as the API's writes do) holds it, and must not then wait for a gate whose holder waits
    for that lock (with a gate on SQLite this append took the gate's whole wait)."""
    engine = make_engine(url=f"sqlite:///{tmp_path / 'gate.db'}")
    upgrade(engine)
    ledger = _ledger(settings, wait_seconds=30.0)
    holder = Session(engine)
    writing(holder)  # BEGIN IMMEDIATE: the write lock is this session's
    thread, errors, done = _append_in_thread(engine, ledger, 1)
    try:
        time.sleep(0.3)  # the other appender is waiting now
        started = time.monotonic()
        ledger.append(holder, sample_events(1))
        holder.commit()
        assert time.monotonic() - started < 5.0
    finally:
        holder.close()
    thread.join(WAIT)
    assert done.is_set() and not errors, errors
    report = verify_ledger(engine, settings, ledger.signer.public_key)
    assert report.ok and report.entries == 2, report.problems
    engine.dispose()
