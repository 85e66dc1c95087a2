"""`mailveil detect run`, `incidents list|show|status|timeline|export|verify`,
`canaries plant|list` and `reports submit|list|show` against a real database."""

from __future__ import annotations

import json
from pathlib import Path

from cli_testkit import (
    Cli,
    add_order,
    add_seller,
    customer_id,
    disclose_to,
    forwarded_report,
    record_stranger,
)
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event


def test_report_incident_export_and_offline_verify(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session], tmp_path: Path
) -> None:
    Path("c.csv").write_text("external_id,email,country\nc-1,olga.buyer@example.com,DE\n")
    cli.ok("customers", "import", "c.csv")
    seller = add_seller(db, "s-1", "Acme Books")
    add_order(db, "o-1", "c-1", seller)
    alias = disclose_to(db, cli_settings, "c-1", seller, "order").alias
    assert alias is not None
    (tmp_path / "r.eml").write_bytes(forwarded_report(alias))
    # Before the relay saw any stranger there, the report is only the customer's claim.
    submitted = cli.ok("reports", "submit", str(tmp_path / "r.eml"), "--customer", "c-1")
    assert "unconfirmed" in submitted.stdout
    record_stranger(db, cli_settings, alias, customer_id(db, "c-1"), seller)
    assert "1 stranger_at_alias" in cli.ok("detect", "run").stdout
    again = cli.ok("reports", "submit", str(tmp_path / "r.eml"), "--customer", "c-1")
    assert "R-2: attributed" in again.stdout
    reports = cli.ok("reports", "list")
    assert "unconfirmed" in reports.flat and "attributed" in reports.flat
    assert "no record" in reports.flat
    assert '"corroborates_entry"' in cli.ok("reports", "show", "2").stdout
    assert "R-2" in cli.ok("reports", "list", "--outcome", "attributed").flat
    assert "R-1" not in cli.ok("reports", "list", "--after", "1").flat
    assert cli("reports", "list", "--outcome", "nonsense").code == 1
    listed = cli.ok("incidents", "list")
    assert "seller:s-1 (source, relay-record)" in listed.flat
    cli.ok("incidents", "status", "1", "confirmed", "--reason", "alias in spam")
    assert "incident_status" in cli.ok("incidents", "timeline", "1").stdout
    assert "customers" in cli.ok("incidents", "blast", "1").stdout
    assert (
        "contained: 1 suspended" in cli.ok("incidents", "contain", "1", "--reason", "leak").stdout
    )
    cli.ok(
        "incidents",
        "report",
        "controller",
        "set",
        "--name",
        "Acme Market",
        "--dpo-email",
        "privacy@market.example",
    )
    told = cli.ok("incidents", "notify", "1")
    assert "notices for 1 customers" in told.stdout
    assert "nobody new to tell" in cli.ok("incidents", "notify", "1").stdout
    html = tmp_path / "report.html"
    cli.ok("incidents", "report", "export", "1", "--html", str(html))
    assert "Personal data breach report" in html.read_text()
    bundle = tmp_path / "bundle.json"
    cli.ok("incidents", "export", "1", "--out", str(bundle))
    key = json.loads(bundle.read_text())["checkpoint"]["verifier_key"]
    verified = cli.ok("incidents", "verify", str(bundle), "--key", key)
    assert "the evidence bundle verifies" in verified.stdout
    data = json.loads(bundle.read_text())
    data["claims"][0]["source"] = "principal:999"
    bundle.write_text(json.dumps(data))
    tampered = cli("incidents", "verify", str(bundle))
    assert tampered.code == 1 and "does not verify" in tampered.stderr
    bundle.write_text("{ not json")
    assert cli("incidents", "verify", str(bundle)).code == 2
    assert "olga.buyer" not in listed.output + verified.output + submitted.output + reports.output


def test_detect_run_and_canaries(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session]
) -> None:
    add_seller(db, "s-1", "Acme Books")
    planted = cli.ok(
        "canaries", "plant", "--principal", "seller:s-1", "--country", "fr", "--count", "2"
    )
    assert "planted 2 canaries" in planted.stdout
    listed = cli.ok("canaries", "list", "--principal", "seller:s-1")
    assert listed.stdout.count("FR") == 2
    assert "no new signals" in cli.ok("detect", "run").stdout
    assert cli("canaries", "plant", "--principal", "nope", "--country", "FR").code == 2


def test_containment_on_weak_evidence_needs_a_second_operator(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session]
) -> None:
    """The seller wrote to both customers first (each saw their alias), then strangers wrote
    to both aliases: named, weakly. The first operator asks; the same one cannot confirm;
    another operator (another login) does."""
    Path("c.csv").write_text(
        "external_id,email,country\nc-1,ann.buyer@example.com,DE\nc-2,bo.buyer@example.com,FR\n"
    )
    cli.ok("customers", "import", "c.csv")
    seller = add_seller(db, "s-1", "Acme Books")
    ledger = Ledger.load(cli_settings)
    for ext in ("c-1", "c-2"):
        cid = customer_id(db, ext)
        add_order(db, f"o-{ext}", ext, seller)
        alias = disclose_to(db, cli_settings, ext, seller, "order").alias
        assert alias is not None
        seen = Event("message", f"principal:{seller}", f"customer:{cid}", alias, "to_customer",
                     "shipping", {"principal": f"principal:{seller}", "size": 1})  # fmt: skip
        with db.begin() as s:
            ledger.append(s, [seen])
        record_stranger(db, cli_settings, alias, cid, seller)
    cli.ok("detect", "run")
    assert "relay-record, needs a 2nd person" in cli.ok("incidents", "list").flat
    ana = {"LOGNAME": "ana", "USER": "ana"}  # who getpass says runs the command
    first = cli.ok("incidents", "contain", "1", "--reason", "two aliases", env=ana)
    assert "containment requested by operator:ana, nothing done yet" in first.flat
    assert "2 x relay-record alias-disclosure (weak)" in first.flat
    again = cli("incidents", "contain", "1", "--reason", "me again", env=ana)
    assert again.code == 1 and "confirmed by another person" in again.flat
    ben = {"LOGNAME": "ben", "USER": "ben"}
    done = cli.ok("incidents", "contain", "1", "--reason", "confirmed", env=ben)
    assert "contained: 1 suspended" in done.flat
