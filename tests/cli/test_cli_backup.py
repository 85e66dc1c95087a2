"""`mailveil backup` / `restore` from the command line: the round trip, the keys-only repair
of a lost keys directory, and the refusals (issue 14, key custody)."""

from __future__ import annotations

import shutil
from pathlib import Path

from cli_testkit import Cli, add_order, add_seller, addresses_by_external_id, disclose_to, open_db

from mailveil.contacts.customers import create_customer
from mailveil.vault import Vault

ADDRESS = "rosa.backup@example.com"


def _setup(cli: Cli, tmp_path: Path) -> Path:
    cli.ok("init")
    settings = cli.settings()
    with open_db(settings) as db:
        with db.begin() as session:
            create_customer(
                session, Vault.open(settings), external_id="c-1", email=ADDRESS, country="DE"
            )
        seller = add_seller(db, "s-1")
        add_order(db, "o-1", "c-1", seller)
        assert disclose_to(db, settings, "c-1", seller).allowed
    cli.ok("ledger", "checkpoint")
    secret = tmp_path / "passphrase"
    secret.write_text("a long enough passphrase\n")
    return secret


def test_backup_and_restore_round_trip(cli: Cli, tmp_path: Path) -> None:
    secret = _setup(cli, tmp_path)
    out, keys = tmp_path / "backups", tmp_path / "elsewhere" / "keys.mvkeys"
    run = cli.ok(
        "backup", "--out", str(out), "--keys-out", str(keys), "--passphrase-file", str(secret)
    )
    assert "sqlite snapshot" in run.flat and "store it apart" in run.flat
    (snapshot,) = out.glob("*.sqlite")
    assert ADDRESS.encode() not in snapshot.read_bytes()
    assert ADDRESS.encode() not in keys.read_bytes()

    restored = Cli(tmp_path / "restored")
    run = restored.ok(
        "restore", "--data", str(snapshot), "--keys", str(keys), "--passphrase-file", str(secret)
    )
    assert "keys match the data" in run.flat
    assert "ledger verifies" in run.flat
    assert addresses_by_external_id(restored.settings()) == {"c-1": ADDRESS}
    restored.ok("init")  # the restored keys are the recorded ones
    restored.ok("ledger", "verify")

    again = Cli(tmp_path / "restored")
    run = again(
        "restore", "--data", str(snapshot), "--keys", str(keys), "--passphrase-file", str(secret)
    )
    assert run.code == 1 and "already exists" in run.flat, str(run)


def test_a_lost_keys_directory_is_brought_back_not_replaced(cli: Cli, tmp_path: Path) -> None:
    secret = _setup(cli, tmp_path)
    keys = tmp_path / "elsewhere" / "keys.mvkeys"
    cli.ok(
        "backup",
        "--out",
        str(tmp_path / "b"),
        "--keys-out",
        str(keys),
        "--passphrase-file",
        str(secret),
    )
    shutil.rmtree(cli.settings().keys_dir)
    refused = cli("init")
    assert refused.code == 1 and "restore --keys-only" in refused.flat, str(refused)
    cli.ok("restore", "--keys-only", "--keys", str(keys), "--passphrase-file", str(secret))
    cli.ok("init")
    cli.ok("ledger", "verify")
    assert addresses_by_external_id(cli.settings()) == {"c-1": ADDRESS}


def test_refusals(cli: Cli, tmp_path: Path) -> None:
    secret = _setup(cli, tmp_path)
    beside = cli(
        "backup",
        "--out",
        str(tmp_path / "b"),
        "--keys-out",
        str(tmp_path / "b" / "k"),
        "--passphrase-file",
        str(secret),
    )
    assert beside.code == 1 and "beside the data" in beside.flat, str(beside)
    short = tmp_path / "short"
    short.write_text("tooshort\n")
    weak = cli(
        "backup",
        "--out",
        str(tmp_path / "b"),
        "--keys-out",
        str(tmp_path / "k"),
        "--passphrase-file",
        str(short),
    )
    assert weak.code == 1 and "at least 12 characters" in weak.flat, str(weak)
    cli.ok(
        "backup",
        "--out",
        str(tmp_path / "b"),
        "--keys-out",
        str(tmp_path / "k"),
        "--passphrase-file",
        str(secret),
    )
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase at all\n")
    other = Cli(tmp_path / "other")
    (snapshot,) = (tmp_path / "b").glob("*.sqlite")
    bad = other(
        "restore",
        "--data",
        str(snapshot),
        "--keys",
        str(tmp_path / "k"),
        "--passphrase-file",
        str(wrong),
    )
    assert bad.code == 1 and "wrong passphrase" in bad.flat, str(bad)
    usage = other("restore", "--keys", str(tmp_path / "k"))
    assert usage.code == 2 and "--keys-only" in usage.flat, str(usage)
