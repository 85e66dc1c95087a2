"""The key set is bound to its database: another key set is refused before anything is minted
(issue 14, key custody: "keys can fork silently")."""

from __future__ import annotations

from pathlib import Path

from cli_testkit import Cli, add_order, add_seller, disclose_to, open_db
from sqlalchemy import delete, select

from mailveil.contacts.customers import create_customer
from mailveil.custody.binding import present_keys
from mailveil.custody.models import KeyFingerprint
from mailveil.ledger.signing import key_path
from mailveil.vault import Vault


def _other(cli: Cli, tmp_path: Path) -> Cli:
    """The same database, a new data directory (so a new, empty keys directory)."""
    url = cli.database_url or cli.settings().db_url
    return Cli(tmp_path / "elsewhere", database_url=url)


def _with_data(cli: Cli) -> None:
    cli.ok("init")
    settings = cli.settings()
    with open_db(settings) as db, db() as session:
        create_customer(
            session,
            Vault.open(settings),
            external_id="c-1",
            email="kim.b@example.com",
            country="DE",
        )
        session.commit()
        seller = add_seller(db, "s-1")
        add_order(db, "o-1", "c-1", seller)
        assert disclose_to(db, settings, "c-1", seller).allowed
    cli.ok("ledger", "checkpoint")


def test_a_new_data_directory_against_the_database_is_refused_and_mints_nothing(
    any_backend_cli: Cli, tmp_path: Path
) -> None:
    cli = any_backend_cli
    _with_data(cli)
    other = _other(cli, tmp_path)
    run = other("init")
    assert run.code == 1, str(run)
    assert run.stderr.startswith("error: the keys in ")
    assert str(other.settings().keys_dir) in run.flat
    assert "address-index.key" in run.flat and "is missing" in run.flat
    assert "keys_path" in run.flat and "--data-dir" in run.flat
    assert "Nothing was created or changed" in run.flat
    # Nothing minted: the fork needed new key files, and none were written.
    assert present_keys(other.settings().keys_dir) == {}
    # The original still works end to end: its ledger verifies, its addresses decrypt.
    cli.ok("init")
    cli.ok("ledger", "verify")


def test_relay_and_serve_refuse_to_start_with_another_key_set(cli: Cli, tmp_path: Path) -> None:
    _with_data(cli)
    other = _other(cli, tmp_path)
    for args in (("relay", "--port", "1"), ("serve", "--port", "1", "--no-relay")):
        run = other(*args)
        assert run.code == 1, str(run)
        assert "are not the keys this database was initialised with" in run.flat, str(run)
        assert "mailveil relay on" not in run.stdout and "mailveil API on" not in run.stdout
    assert present_keys(other.settings().keys_dir) == {}


def test_a_replaced_ledger_key_is_refused(cli: Cli) -> None:
    _with_data(cli)
    settings = cli.settings()
    path = key_path(settings)
    path.write_bytes(bytes(32))
    run = cli("init")
    assert run.code == 1, str(run)
    assert "ledger-ed25519.key is another key (fingerprint" in run.flat
    assert "recorded)" in run.flat


def test_a_deleted_key_is_refused_not_replaced(cli: Cli) -> None:
    _with_data(cli)
    path = key_path(cli.settings())
    path.unlink()
    run = cli("init")
    assert run.code == 1, str(run)
    assert "ledger-ed25519.key (ledger-signing" in run.flat and "is missing" in run.flat
    assert not path.exists()


def test_a_database_from_before_binding_is_adopted_only_by_keys_that_open_its_data(
    cli: Cli, tmp_path: Path
) -> None:
    _with_data(cli)
    settings = cli.settings()
    with open_db(settings) as db, db() as session:
        session.execute(delete(KeyFingerprint))
        session.commit()
    other = _other(cli, tmp_path)
    refused = other("init")
    assert refused.code == 1, str(refused)
    assert "key-encryption key" in refused.flat or "missing" in refused.flat
    assert present_keys(other.settings().keys_dir) == {}
    adopted = cli.ok("init")
    assert "keys checked against the existing data and recorded" in adopted.flat
    with open_db(settings) as db, db() as session:
        purposes = set(session.scalars(select(KeyFingerprint.purpose)))
    assert purposes == {"address-index", "address-kek", "ledger-signing", "dkim", "verp"}


def test_retired_kek_files_do_not_block_start(cli: Cli) -> None:
    _with_data(cli)
    cli.ok("keys", "rotate", "--reencrypt")
    cli.ok("keys", "retire")
    cli.ok("init")
    with open_db(cli.settings()) as db, db() as session:
        states = {
            r.key_id: r.state
            for r in session.scalars(
                select(KeyFingerprint).where(KeyFingerprint.purpose == "address-kek")
            )
        }
    assert sorted(states.values()) == ["active", "retired"], states
