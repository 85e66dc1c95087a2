"""The whole operator workflow on SQLite and, when reachable, PostgreSQL (`--database-url`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cli_testkit import (
    Cli,
    add_order,
    add_seller,
    addresses_by_external_id,
    assert_no_address,
    ledger_entries,
    open_db,
    table_rows,
    tokens,
)
from sqlalchemy import text

from mailveil.auth.keys import Role, authenticate
from mailveil.ledger import merkle
from mailveil.ledger.signing import load_public_key, verify_checkpoint

ADDRESSES = {"b-1": "agnes.backend@example.com", "b-2": "boris.backend@example.org"}


def test_operator_workflow(any_backend_cli: Cli) -> None:
    cli = any_backend_cli
    (token,) = tokens(cli.ok("init").stdout)
    assert "mvk_" not in cli.ok("init").output
    settings = cli.settings()

    Path("b.csv").write_text(
        "external_id,email,country\n"
        + "".join(f"{k},{a},DE\n" for k, a in ADDRESSES.items())
        + "b-3,not-an-address,DE\n"
    )
    run = cli("customers", "import", "b.csv")
    assert run.code == 1, str(run)
    assert [r[0] for r in table_rows(run.stderr)] == ["4"]
    assert_no_address(run, [*ADDRESSES.values(), "not-an-address"])
    assert addresses_by_external_id(settings) == ADDRESSES

    with open_db(settings) as db:
        seller = add_seller(db, "s-1", "Acme Books")
        add_order(db, "o-1", "b-1", seller)
        with db() as session:
            assert authenticate(session, token).role is Role.ADMIN

    allowed = cli.ok(
        "disclose", "--customer", "b-1", "--principal", "seller:s-1", "--purpose", "order"
    )
    alias = re.search(r"^alias +(\S+)$", allowed.stdout, re.M)
    assert alias, str(allowed)
    denied = cli("disclose", "--customer", "b-2", "--principal", "seller:s-1", "--purpose", "order")
    assert denied.code == 1, str(denied)
    assert "denied: no order with this seller in the last 90 days" in denied.flat
    assert_no_address(allowed, list(ADDRESSES.values()))
    assert_no_address(denied, list(ADDRESSES.values()))

    report = json.loads(cli.ok("aliases", "show", alias.group(1)).stdout)
    assert report["principal"]["external_id"] == "s-1"
    cli.ok("aliases", "revoke", alias.group(1), "--reason", "test")

    note = cli.ok("ledger", "checkpoint").stdout
    assert verify_checkpoint(note, load_public_key(settings)).tree_size == 3
    proof = json.loads(cli.ok("ledger", "proof", "--index", "1").stdout)
    merkle.verify_inclusion(
        1,
        3,
        bytes.fromhex(proof["leaf_hash"]),
        [bytes.fromhex(h) for h in proof["proof"]],
        bytes.fromhex(proof["root_hash"]),
    )
    assert cli.ok("ledger", "verify").stdout == "ledger verifies: 3 entries, 1 signed checkpoints\n"

    cli.ok("keys", "rotate", "--reencrypt")
    cli.ok("keys", "retire")
    assert addresses_by_external_id(settings) == ADDRESSES

    seller_token = cli.ok("api-keys", "create", "--role", "seller", "--principal-id", str(seller))
    with open_db(settings) as db, db() as session:
        (found,) = tokens(seller_token.stdout)
        assert authenticate(session, found).principal_id == seller

    # Tamper with one character of entry 1, as raw SQL would.
    leaf = next(e.leaf for e in ledger_entries(settings) if e.seq == 1)
    with open_db(settings) as db, db.begin() as session:
        session.execute(
            text("UPDATE ledger_entries SET leaf = :leaf WHERE seq = 1"),
            {"leaf": leaf.replace('"kind":"disclosure_denied"', '"kind":"disclosure_deniee"')},
        )
    bad = cli("ledger", "verify")
    assert bad.code == 1, str(bad)
    assert bad.stderr.startswith("error: ledger does NOT verify: first bad entry seq 1: ")


def test_a_database_without_the_schema_says_to_run_init(any_backend_cli: Cli) -> None:
    cli = any_backend_cli
    if not cli.database_url:
        cli.data_dir.mkdir()
        (cli.data_dir / "mailveil.db").touch()  # an empty SQLite file
    for args in (["api-keys", "list"], ["aliases", "show", "x@relay.mailveil.localhost"]):
        run = cli(*args)
        assert run.code == 1, str(run)
        assert run.stderr.startswith("error: database error: ")
        assert run.stderr.rstrip().endswith("(the schema is missing: run `mailveil init` first)")
