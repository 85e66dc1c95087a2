"""`mailveil ledger verify|checkpoint|proof`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cli_testkit import Cli, Run, add_order, add_seller, disclose_to, ledger_entries
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.ledger import merkle
from mailveil.ledger.signing import load_public_key, verify_checkpoint

ENTRIES = 6


@pytest.fixture
def ledger(cli: Cli, cli_settings: Settings, db: sessionmaker[Session]) -> int:
    """A ledger of ENTRIES entries: disclosures to seller s-1 and denials."""
    Path("c.csv").write_text(
        "external_id,email,country\nc-1,rolf.buyer@example.com,DE\nc-2,sara.buyer@example.com,DE\n"
    )
    cli.ok("customers", "import", "c.csv")
    seller = add_seller(db, "s-1")
    add_order(db, "o-1", "c-1", seller)
    for i in range(ENTRIES):
        result = disclose_to(db, cli_settings, "c-1" if i % 2 == 0 else "c-2", seller)
        assert result.ledger_seq == i
    return ENTRIES


def set_leaf(db: sessionmaker[Session], seq: int, leaf: str) -> None:
    with db.begin() as session:
        session.execute(
            text("UPDATE ledger_entries SET leaf = :leaf WHERE seq = :seq"),
            {"leaf": leaf, "seq": seq},
        )


def verify(cli: Cli, *extra: str) -> Run:
    return cli("ledger", "verify", *extra)


def test_verify_passes_on_an_empty_ledger(cli: Cli, cli_settings: Settings) -> None:
    run = verify(cli)
    assert run.code == 0, str(run)
    assert run.stdout.strip() == "ledger verifies: 0 entries, 0 signed checkpoints"


@pytest.mark.parametrize("batch", ["10000", "1", "4"])
def test_verify_passes_on_a_good_ledger(cli: Cli, ledger: int, batch: str) -> None:
    cli.ok("ledger", "checkpoint")
    run = verify(cli, "--batch", batch)
    assert run.code == 0, str(run)
    assert run.stdout.strip() == f"ledger verifies: {ledger} entries, 1 signed checkpoints"


@pytest.mark.parametrize("batch", ["10000", "1", "4"])
@pytest.mark.parametrize("seq", [0, 2, ENTRIES - 1])
def test_a_changed_character_names_the_first_bad_entry(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session], ledger: int, seq: int, batch: str
) -> None:
    leaf = next(e.leaf for e in ledger_entries(cli_settings) if e.seq == seq)
    assert '"purpose":"order"' in leaf
    set_leaf(db, seq, leaf.replace('"purpose":"order"', '"purpose":"ordeR"'))
    run = verify(cli, "--batch", batch)
    assert run.code == 1, str(run)
    assert run.stdout == "" or "ledger verifies" not in run.stdout
    assert run.stderr.strip() == (
        f"error: ledger does NOT verify: first bad entry seq {seq}: "
        f"entry {seq}: leaf does not match its stored hash"
    )


def test_a_deleted_entry_is_named(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session], ledger: int
) -> None:
    with db.begin() as session:
        session.execute(text("DELETE FROM ledger_entries WHERE seq = 3"))
    run = verify(cli)
    assert run.code == 1, str(run)
    assert run.stderr.startswith("error: ledger does NOT verify: first bad entry seq 3: ")
    assert "missing" in run.flat


def test_a_rehashed_entry_breaks_the_chain_at_the_next_one(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session], ledger: int
) -> None:
    # An attacker who also rewrites the stored hash is caught by the next entry's link.
    leaf = next(e.leaf for e in ledger_entries(cli_settings) if e.seq == 2)
    forged = leaf.replace('"purpose":"order"', '"purpose":"ordeR"')
    with db.begin() as session:
        session.execute(
            text("UPDATE ledger_entries SET leaf = :leaf, leaf_hash = :h WHERE seq = 2"),
            {"leaf": forged, "h": hashlib.sha256(b"\x00" + forged.encode()).digest()},
        )
    run = verify(cli)
    assert run.code == 1, str(run)
    assert run.stderr.startswith("error: ledger does NOT verify: first bad entry seq 3: ")
    assert "prev is not the hash of entry 2" in run.flat


def test_a_forged_checkpoint_signature_is_caught(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session], ledger: int
) -> None:
    note = cli.ok("ledger", "checkpoint").stdout
    body, sig = note.rsplit(" ", 1)
    forged = body + " " + ("A" if sig[0] != "A" else "B") + sig[1:]
    with db.begin() as session:
        session.execute(text("UPDATE ledger_checkpoints SET note = :n"), {"n": forged})
    run = verify(cli)
    assert run.code == 1, str(run)
    assert run.stderr.startswith(
        f"error: ledger does NOT verify: first bad checkpoint at tree size {ledger}: "
    )
    assert "signature" in run.flat


def test_a_batch_of_zero_is_a_usage_error(cli: Cli, ledger: int) -> None:
    run = verify(cli, "--batch", "0")
    assert run.code == 2, str(run)
    assert "--batch" in run.flat


# -- checkpoint ---------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", ["200", "60"])
def test_checkpoint_prints_a_signed_note_that_verifies(
    cli: Cli, cli_settings: Settings, ledger: int, columns: str
) -> None:
    run = cli.ok("ledger", "checkpoint", env={"COLUMNS": columns})
    note = run.stdout
    lines = note.split("\n")
    assert lines[0] == "relay.mailveil.localhost/ledger"
    assert lines[1] == str(ledger)
    assert lines[3].startswith("time ")
    assert lines[4] == ""
    assert lines[5].startswith("— relay.mailveil.localhost/ledger ")
    assert note.endswith("\n") and lines[6:] == [""]
    parsed = verify_checkpoint(note, load_public_key(cli_settings))
    assert parsed.tree_size == ledger
    hashes = [bytes(e.leaf_hash) for e in ledger_entries(cli_settings)]
    assert parsed.root == merkle.root(hashes)


def test_checkpoint_again_without_new_entries_prints_the_same_note(cli: Cli, ledger: int) -> None:
    first = cli.ok("ledger", "checkpoint").stdout
    assert cli.ok("ledger", "checkpoint").stdout == first


def test_checkpoint_of_an_empty_ledger_is_refused(cli: Cli, cli_settings: Settings) -> None:
    run = cli("ledger", "checkpoint")
    assert run.code == 1, str(run)
    assert run.stderr.strip() == "error: the ledger is empty: nothing to checkpoint"


# -- proofs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(ENTRIES))
def test_inclusion_proof_json_verifies(
    cli: Cli, cli_settings: Settings, ledger: int, index: int
) -> None:
    proof = json.loads(cli.ok("ledger", "proof", "--index", str(index)).stdout)
    assert proof["leaf_index"] == index
    assert proof["tree_size"] == ledger
    leaf = next(e.leaf for e in ledger_entries(cli_settings) if e.seq == index)
    assert bytes.fromhex(proof["leaf_hash"]) == hashlib.sha256(b"\x00" + leaf.encode()).digest()
    merkle.verify_inclusion(
        index,
        ledger,
        bytes.fromhex(proof["leaf_hash"]),
        [bytes.fromhex(h) for h in proof["proof"]],
        bytes.fromhex(proof["root_hash"]),
    )
    assert proof["checkpoint"] is None  # nothing signed yet


def test_inclusion_proof_uses_the_latest_checkpoint(cli: Cli, ledger: int) -> None:
    cli.ok("ledger", "checkpoint")
    proof = json.loads(cli.ok("ledger", "proof", "--index", "0").stdout)
    assert proof["checkpoint"]["tree_size"] == ledger
    assert proof["checkpoint"]["root_hash"] == proof["root_hash"]


def test_inclusion_proof_in_a_smaller_tree(cli: Cli, ledger: int) -> None:
    proof = json.loads(cli.ok("ledger", "proof", "--index", "1", "--size", "3").stdout)
    assert proof["tree_size"] == 3
    merkle.verify_inclusion(
        1,
        3,
        bytes.fromhex(proof["leaf_hash"]),
        [bytes.fromhex(h) for h in proof["proof"]],
        bytes.fromhex(proof["root_hash"]),
    )


@pytest.mark.parametrize("first", range(1, ENTRIES + 1))
def test_consistency_proof_json_verifies(cli: Cli, ledger: int, first: int) -> None:
    proof = json.loads(cli.ok("ledger", "proof", "--first", str(first)).stdout)
    assert (proof["first"], proof["second"]) == (first, ledger)
    merkle.verify_consistency(
        first,
        ledger,
        bytes.fromhex(proof["first_root"]),
        bytes.fromhex(proof["second_root"]),
        [bytes.fromhex(h) for h in proof["proof"]],
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "error: give exactly one of --index or --first"),
        (["--index", "0", "--first", "1"], 2, "error: give exactly one of --index or --first"),
        (["--index", "99"], 1, "error: no ledger entry 99 (not-found)"),
        (["--index", "-1"], 1, "error: leaf index must not be negative (invalid-input)"),
        (["--first", "0"], 1, "error: first tree size must be at least 1 (invalid-input)"),
        (
            ["--first", "99"],
            1,
            f"error: tree size 99 is beyond the ledger's size {ENTRIES} (not-found)",
        ),
        (["--index", "4", "--size", "3"], 1, "error: entry 4 is not in the tree of size 3"),
    ],
)
def test_proof_refusals(cli: Cli, ledger: int, args: list[str], code: int, message: str) -> None:
    run = cli("ledger", "proof", *args)
    assert run.code == code, str(run)
    assert run.stderr.strip().startswith(message)
    assert run.stdout == ""
