"""`mailveil keys rotate-index` / `rotate-verp` from the command line: the data stays
readable and findable, and the key record follows so the next start accepts the keys."""

from __future__ import annotations

from pathlib import Path

from cli_testkit import Cli, addresses_by_external_id, open_db

from mailveil.contacts.customers import create_customer, find_customer_by_address
from mailveil.keyfiles import read_secret
from mailveil.vault import INDEX_KEY_FILE, Vault

ADDRESSES = {"c-1": "ana.rotate@example.com", "c-2": "ben.rotate@example.org"}


def test_rotate_index_then_verp(cli: Cli, tmp_path: Path) -> None:
    cli.ok("init")
    settings = cli.settings()
    with open_db(settings) as db, db.begin() as session:
        for ext, address in ADDRESSES.items():
            create_customer(
                session, Vault.open(settings), external_id=ext, email=address, country="DE"
            )
    before = read_secret(settings.keys_dir / INDEX_KEY_FILE)
    run = cli.ok("keys", "rotate-index", "--wait", "0", "--batch", "1")
    assert "2 address(es) re-indexed" in run.flat, str(run)
    assert read_secret(settings.keys_dir / INDEX_KEY_FILE) != before
    with open_db(settings) as db, db() as session:
        vault = Vault.open(settings)
        for address in ADDRESSES.values():
            assert find_customer_by_address(session, vault, address) is not None
    assert addresses_by_external_id(settings) == ADDRESSES
    run = cli.ok("keys", "rotate-verp")
    assert "honoured for 14 day(s)" in run.flat
    cli.ok("init")  # the record followed both rotations
    again = cli.ok("keys", "rotate-index", "--wait", "0")
    assert "2 address(es) re-indexed" in again.flat
    cli.ok("init")


def test_rotate_ledger_and_dkim_from_the_command_line(cli: Cli, tmp_path: Path) -> None:
    from cli_testkit import add_order, add_seller, disclose_to

    cli.ok("init")
    settings = cli.settings()
    with open_db(settings) as db:
        with db.begin() as session:
            create_customer(
                session,
                Vault.open(settings),
                external_id="c-1",
                email=ADDRESSES["c-1"],
                country="DE",
            )
        seller = add_seller(db, "s-1")
        add_order(db, "o-1", "c-1", seller)
        assert disclose_to(db, settings, "c-1", seller).allowed
    cli.ok("ledger", "checkpoint")
    old_key = cli.ok("ledger", "key").stdout.strip()
    run = cli.ok("keys", "rotate-ledger")
    assert "ledger key rotated; the change is entry 1" in run.flat, str(run)
    assert old_key in run.flat
    new_key = cli.ok("ledger", "key").stdout.strip()
    assert new_key != old_key
    cli.ok("ledger", "checkpoint")
    assert "ledger verifies" in cli.ok("ledger", "verify").flat
    cli.ok("init")

    run = cli.ok("keys", "dkim-rollover", "--ed25519-selector", "ed2", "--rsa-selector", "rsa2")
    assert "ed2._domainkey." in run.flat and "rsa2._domainkey." in run.flat
    assert "mv-rsa._domainkey" not in run.flat  # only the new records are listed to publish
    assert "nothing to retire" in cli.ok("keys", "dkim-retire").flat
    bad = cli("keys", "dkim-rollover", "--ed25519-selector", "ed2", "--rsa-selector", "rsa3")
    assert bad.code == 1 and "must differ" in bad.flat, str(bad)
    cli.ok("init")
    # The key export takes the rolled-over state and the retired ledger key along.
    secret = tmp_path / "pass"
    secret.write_text("a long enough passphrase\n")
    keys_out = tmp_path / "vault" / "k.mvkeys"
    cli.ok(
        "backup",
        "--out",
        str(tmp_path / "b"),
        "--keys-out",
        str(keys_out),
        "--passphrase-file",
        str(secret),
    )
    restored = Cli(tmp_path / "restored")
    (snapshot,) = (tmp_path / "b").glob("*.sqlite")
    run = restored.ok(
        "restore",
        "--data",
        str(snapshot),
        "--keys",
        str(keys_out),
        "--passphrase-file",
        str(secret),
    )
    assert "ledger verifies" in run.flat, str(run)
