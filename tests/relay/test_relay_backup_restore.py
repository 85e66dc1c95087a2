"""`mailveil backup` / `restore` round trip while the relay takes mail, on SQLite and
PostgreSQL (issue 14, key custody: backup and restore)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from custody_kit import LiveDb, Traffic, live_db, new_pg_database, pg_url_for, running_relay
from sqlalchemy import func, select

from mailveil.config import Settings, load_settings
from mailveil.custody.backup import BackupError, restore, take_backup
from mailveil.custody.binding import KeyMismatch, present_keys
from mailveil.custody.keyfile_export import KeyExportError, read_keys_dir, wrap_keys
from mailveil.db.session import make_engine, make_session_factory
from mailveil.relay.models import RelayMessage
from mailveil.vault import init_keys

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path, _pg_available: bool) -> Iterator[LiveDb]:
    with live_db(request.param, tmp_path, _pg_available) as live:
        yield live


@pytest.fixture
def target(db: LiveDb, tmp_path: Path) -> Iterator[Settings]:
    """Where the restore goes: a new data directory and, on PostgreSQL, a new database."""
    data_dir = tmp_path / "restored" / "var"
    if db.backend == "sqlite":
        yield load_settings(env={}, data_dir=data_dir)
        return
    with new_pg_database() as name:
        yield load_settings(env={}, data_dir=data_dir, database_url=pg_url_for(name, db.url))


def _messages(settings: Settings) -> int:
    engine = make_engine(settings)
    try:
        with make_session_factory(engine)() as session:
            return int(session.scalar(select(func.count()).select_from(RelayMessage)) or 0)
    finally:
        engine.dispose()


def test_round_trip_while_the_relay_takes_mail(
    db: LiveDb, target: Settings, relay_settings: Settings, tmp_path: Path
) -> None:
    with running_relay(relay_settings, db, tmp_path) as relay:
        traffic = Traffic(relay).start()
        try:
            traffic.wait_for(5)
            before = traffic.accepted
            backup = take_backup(
                relay.settings, tmp_path / "backups", tmp_path / "vault" / "k.mvkeys", PASSPHRASE
            )
            after = traffic.accepted
            traffic.wait_for(after + 5)
        finally:
            traffic.stop()
    assert traffic.refused == [] and traffic.errors == []
    assert backup.data_file.parent == tmp_path / "backups"
    assert not (tmp_path / "backups" / "k.mvkeys").exists()

    report = restore(target, backup.keys_file, PASSPHRASE, backup.data_file)
    restored = _messages(target)
    assert report.ledger is not None and report.ledger.ok, report.ledger
    # One consistent moment between the start and the end of the snapshot.
    assert before <= restored <= after + 1, (before, restored, after)
    assert present_keys(target.keys_dir) == present_keys(relay.settings.keys_dir)
    print(
        f"\n[backup/restore {db.backend}] messages accepted during the run: "
        f"{traffic.accepted}, refused: {len(traffic.refused)}, errors: {len(traffic.errors)}; "
        f"in the snapshot: {restored}; ledger verify: ok ({report.ledger.entries} entries, "
        f"{report.ledger.checkpoints} checkpoints); backup {backup.seconds:.2f}s, "
        f"restore {report.seconds:.2f}s"
    )


def test_restore_refuses_keys_that_do_not_open_the_data(
    db: LiveDb, target: Settings, relay_settings: Settings, tmp_path: Path
) -> None:
    with running_relay(relay_settings, db, tmp_path) as relay:
        traffic = Traffic(relay).start()
        try:
            traffic.wait_for(3)
            backup = take_backup(
                relay.settings, tmp_path / "backups", tmp_path / "vault" / "k.mvkeys", PASSPHRASE
            )
        finally:
            traffic.stop()
    other = load_settings(env={}, data_dir=tmp_path / "other")
    init_keys(other)
    from mailveil.ledger.signing import init_signing_key

    init_signing_key(other)
    foreign = tmp_path / "vault" / "foreign.mvkeys"
    foreign.write_bytes(wrap_keys(read_keys_dir(other.keys_dir), PASSPHRASE))
    with pytest.raises(KeyMismatch, match="does not open this data"):
        restore(target, foreign, PASSPHRASE, backup.data_file)
    assert not target.keys_dir.exists() or not any(target.keys_dir.iterdir())
    with pytest.raises(KeyExportError, match="wrong passphrase"):
        restore(target, backup.keys_file, PASSPHRASE + "!", backup.data_file)


def test_the_key_export_is_never_written_beside_the_snapshot(
    db: LiveDb, relay_settings: Settings, tmp_path: Path
) -> None:
    with (
        running_relay(relay_settings, db, tmp_path) as relay,
        pytest.raises(BackupError, match="beside the data"),
    ):
        take_backup(relay.settings, tmp_path / "b", tmp_path / "b" / "sub" / "k.mvkeys", PASSPHRASE)
    assert not (tmp_path / "b" / "sub" / "k.mvkeys").exists()
