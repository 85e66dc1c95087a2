"""`mailveil init`: idempotent, prints the bootstrap admin key once, private files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cli_testkit import TOKEN, Cli, open_db, tokens

from mailveil.auth.keys import Role, Unauthenticated, authenticate, list_keys
from mailveil.db.migrate import current_revision, head_revision
from mailveil.db.session import make_engine


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_files(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((data_dir / "keys").iterdir())}


def test_first_init_prints_an_admin_token_that_authenticates(cli: Cli) -> None:
    run = cli.ok("init")
    (token,) = tokens(run.stdout)
    assert "shown once" in run.stdout
    assert run.stderr == ""
    with open_db(cli.settings()) as db, db() as session:
        caller = authenticate(session, token)
        assert caller.role is Role.ADMIN
        assert caller.principal_id is None
        (key,) = list_keys(session)
        assert key.key_id == caller.key_id
        assert key.label == "bootstrap admin"
        with pytest.raises(Unauthenticated):
            authenticate(session, token[:-1] + ("A" if token[-1] != "A" else "B"))


def test_second_init_prints_no_token_and_changes_no_key(cli: Cli) -> None:
    first = cli.ok("init")
    (token,) = tokens(first.stdout)
    keys_before = key_files(cli.data_dir)

    second = cli.ok("init")
    assert TOKEN.search(second.output) is None, str(second)
    assert "mvk_" not in second.output
    assert "already exists" in second.flat
    assert "mailveil api-keys create --role admin" in second.flat
    # Idempotent: the same keys (a new key file would orphan every stored address).
    assert key_files(cli.data_dir) == keys_before
    with open_db(cli.settings()) as db, db() as session:
        assert len(list_keys(session)) == 1
        assert authenticate(session, token).role is Role.ADMIN

    third = cli.ok("init")
    assert "mvk_" not in third.output


def test_init_makes_private_files_and_directories(cli: Cli) -> None:
    cli.ok("init")
    data = cli.data_dir
    assert mode(data) == 0o700
    assert mode(data / "keys") == 0o700
    assert mode(data / "logs") == 0o700
    assert mode(data / "mailveil.db") == 0o600
    secrets = [p for p in (data / "keys").iterdir() if p.suffix == ".key"]
    names = {p.name for p in secrets}
    assert "address-index.key" in names
    assert "ledger-ed25519.key" in names
    assert any(n.startswith("address-kek-") for n in names)
    for path in secrets:
        assert mode(path) == 0o600, path
    # The checkpoint verifier key is public on purpose, and is not the private key.
    pub = (data / "keys" / "ledger-ed25519.pub").read_text()
    assert pub.startswith("relay.mailveil.localhost/ledger+")


def test_init_tightens_a_data_directory_that_was_too_open(cli: Cli) -> None:
    cli.data_dir.mkdir(mode=0o755)
    cli.data_dir.chmod(0o755)
    cli.ok("init")
    assert mode(cli.data_dir) == 0o700


def test_init_brings_the_schema_to_the_latest_migration(cli: Cli) -> None:
    cli.ok("init")
    engine = make_engine(url=cli.settings().db_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_the_token_is_printed_whole_on_a_narrow_terminal(cli: Cli) -> None:
    run = cli.ok("init", env={"COLUMNS": "30"})
    (token,) = tokens(run.stdout)
    assert f"\n{token}\n" in run.stdout
    with open_db(cli.settings()) as db, db() as session:
        assert authenticate(session, token).role is Role.ADMIN


def test_the_last_admin_key_is_kept_and_a_lost_one_is_replaced_on_the_server(cli: Cli) -> None:
    """Revoking the last active admin key is refused with the way back; an operator who lost
    every admin token issues a new one from the server's command line."""
    (token,) = tokens(cli.ok("init").stdout)
    key_id = token.split("_")[1]
    refused = cli("api-keys", "revoke", key_id)
    assert refused.code == 1 and "last active admin key" in refused.flat, str(refused)
    assert "api-keys create --role admin" in refused.flat
    (new_token,) = tokens(cli.ok("api-keys", "create", "--role", "admin").stdout)
    cli.ok("api-keys", "revoke", key_id)  # no longer the last one
    with open_db(cli.settings()) as db, db() as session:
        assert authenticate(session, new_token).role is Role.ADMIN
        with pytest.raises(Unauthenticated):
            authenticate(session, token)


def test_init_on_a_data_dir_that_is_a_file_fails_clearly(cli: Cli) -> None:
    cli.data_dir.write_text("not a directory")
    run = cli("init")
    assert run.code == 1, str(run)
    assert run.stderr.startswith("error: ")
    assert str(cli.data_dir) in run.flat
    assert "Traceback" not in run.output
    assert cli.data_dir.read_text() == "not a directory"


def test_init_uses_the_data_dir_from_the_environment(cli: Cli, tmp_path: Path) -> None:
    elsewhere = tmp_path / "from-env"
    run = cli.raw(["init"], env={"MAILVEIL_DATA_DIR": str(elsewhere)})
    assert run.code == 0, str(run)
    assert (elsewhere / "mailveil.db").is_file()
    assert not cli.data_dir.exists()


def test_the_data_dir_option_beats_the_environment(cli: Cli, tmp_path: Path) -> None:
    elsewhere = tmp_path / "from-env"
    cli.ok("init", env={"MAILVEIL_DATA_DIR": str(elsewhere)})
    assert (cli.data_dir / "mailveil.db").is_file()
    assert not elsewhere.exists()
