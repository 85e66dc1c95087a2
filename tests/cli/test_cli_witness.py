"""`mailveil witness ...` (its own directory, no mailveil settings) and the ledger's side:
`ledger key|checkpoint|publish|witnesses|alerts` against a witness on a loopback port."""

from __future__ import annotations

import sys
from pathlib import Path

from cli_testkit import Cli, open_db
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "witness"))
from witness_testkit import MemoryLog, events, witness_thread

from mailveil.config import Settings
from mailveil.ledger.append import Ledger
from mailveil.ledger.models import LedgerEntry
from mailveil.ledger.notes import parse_vkey
from mailveil.witness.client import add_checkpoint
from mailveil.witness.home import WitnessHome
from mailveil.witness.service import Witness


def test_witness_commands(cli: Cli, tmp_path: Path) -> None:
    wdir = str(tmp_path / "w")
    made = cli.raw(["witness", "init", "--dir", wdir, "--name", "witness.test/cli"])
    assert made.code == 0, str(made)
    vkey = made.stdout.strip()
    assert parse_vkey(vkey).name == "witness.test/cli"
    assert cli.raw(["witness", "key", "--dir", wdir]).stdout.strip() == vkey
    again = cli.raw(["witness", "init", "--dir", wdir, "--name", "witness.test/other"])
    assert again.code == 1 and "already the witness 'witness.test/cli'" in again.stderr
    missing = cli.raw(["witness", "key", "--dir", str(tmp_path / "none")])
    assert missing.code == 1 and "mailveil witness init" in missing.stderr

    log = MemoryLog("log.test/cli")
    assert cli.raw(["witness", "add-log", "--dir", wdir, log.vkey]).code == 0
    # The plain base64 key with its origin is the same key: already followed.
    b64 = parse_vkey(log.vkey).public_key_b64
    same = cli.raw(["witness", "add-log", "--dir", wdir, b64, "--origin", "log.test/cli"])
    assert same.code == 0 and "already following" in same.stdout
    bad = cli.raw(["witness", "add-log", "--dir", wdir, "nonsense"])
    assert bad.code == 1 and "verifier key" in bad.stderr

    log.grow(6)
    witness = WitnessHome(Path(wdir))
    service = Witness(witness.load(), witness.state())  # as `witness serve` runs it
    assert service.add_checkpoint(log.body(0)).status == 200
    fork = log.fork(keep=3, grow=5)
    assert service.add_checkpoint(fork.body(6)).status == 422
    listed = cli.raw(["witness", "logs", "--dir", wdir])
    assert "log.test/cli" in listed.flat and " 6 " in listed.flat
    refused = cli.raw(["witness", "refusals", "--dir", wdir])
    assert "not consistent with size 6" in refused.flat
    notes = cli.raw(["witness", "refusals", "--dir", wdir, "--notes"])
    assert fork.note() in notes.stdout  # the forged checkpoint, exactly as the log signed it
    gone = cli.raw(["witness", "remove-log", "--dir", wdir, log.vkey])
    assert gone.code == 0
    assert service.add_checkpoint(log.body(6)).status == 404


def grow(settings: Settings, ledger: Ledger, n: int) -> None:
    with open_db(settings) as db, db.begin() as session:
        ledger.append(session, events(n))


def test_the_ledger_publishes_and_shows_its_witnesses(cli: Cli, tmp_path: Path) -> None:
    assert cli("ledger", "publish").code == 2  # no witnesses configured
    with witness_thread(tmp_path / "w", "witness.test/cli") as url:
        wkey = WitnessHome(tmp_path / "w").load().vkey.vkey
        cli.env["MAILVEIL_WITNESSES"] = f"{wkey} {url}"
        cli.ok("init")
        vkey = cli.ok("ledger", "key").stdout.strip()
        cli.ok("witness", "add-log", "--dir", str(tmp_path / "w"), vkey)
        settings = cli.settings()
        ledger = Ledger.load(settings)
        grow(settings, ledger, 5)
        printed = cli.ok("ledger", "checkpoint")
        assert "cosigned witness witness.test/cli" in printed.stderr
        assert printed.stdout.count("\u2014 ") == 2  # the ledger's signature and the witness's
        assert "newest witnessed (quorum 1): " in cli.ok("ledger", "witnesses").flat
        # Someone else with the signing key shows the witness a longer, different history
        # that starts like the real one.
        with open_db(settings) as db, db() as session:
            real = [
                bytes(h)
                for h in session.scalars(select(LedgerEntry.leaf_hash).order_by(LedgerEntry.seq))
            ]
        size = int(printed.stdout.split("\n")[1])
        fork = MemoryLog(ledger.signer.key_name)
        fork.signer = ledger.signer
        fork.leaves = real[:size]
        fork.grow(30, "forged")
        assert add_checkpoint(url, size, fork.proof(size), fork.note(), timeout=10).status == 200
        grow(settings, ledger, 3)  # the real ledger goes on
        published = cli("ledger", "publish")
        assert published.code == 1, str(published)
        assert "ALERT witness witness.test/cli" in published.stderr
        assert "witness_disagreement" in published.stderr  # the log line, never on stdout
        assert published.stdout == ""
        alerts = cli.ok("ledger", "alerts").flat
        assert "witness_ahead" in alerts and f"{size + 30}" in alerts
        status = cli.ok("ledger", "witnesses").flat
        assert f"{size + 30}" in status and "refused" in status
