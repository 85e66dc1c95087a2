"""`mailveil incidents report ...` on a real database: the controller's details, show,
export as HTML, PDF and JSON, the officer's assessment, submissions and decisions, the exact
list of affected people and its offline check; clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

from cli_testkit import (
    Cli,
    add_order,
    add_seller,
    assert_no_address,
    customer_id,
    disclose_to,
    record_stranger,
)
from pypdf import PdfReader
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings


def test_the_report_commands(
    cli: Cli, cli_settings: Settings, db: sessionmaker[Session], tmp_path: Path
) -> None:
    Path("c.csv").write_text(
        "external_id,email,country,subdivision\n"
        "c-1,olga.buyer@example.com,FR,\n"
        "c-2,sam.buyer@example.com,US,US-WA\n"
    )
    cli.ok("customers", "import", "c.csv")
    seller = add_seller(db, "s-1", "Acme Books")
    aliases = []
    for ext in ("c-1", "c-2"):
        add_order(db, f"o-{ext}", ext, seller)
        aliases.append(disclose_to(db, cli_settings, ext, seller, "order").alias)
    assert aliases[0] is not None
    record_stranger(db, cli_settings, aliases[0], customer_id(db, "c-1"), seller)
    cli.ok("detect", "run")
    shown = cli.ok("incidents", "report", "show", "1")
    assert "DRAFT" in shown.stdout and "the incident is not confirmed yet" in shown.stdout
    assert "2 people" in shown.stdout and "US-WA:individuals" in shown.stdout
    bad = cli("incidents", "report", "controller", "set", "--dpo-email", "nope")
    assert bad.code == 1 and "not an e-mail address" in bad.stderr
    cli.ok(
        "incidents",
        "report",
        "controller",
        "set",
        "--name",
        "Acme Market SAS",
        "--address",
        "1 rue de la Paix\\n75002 Paris",
        "--establishment",
        "FR",
        "--dpo-email",
        "dpo@market.example",
    )
    assert "Acme Market SAS" in cli.ok("incidents", "report", "controller", "show").stdout
    refused = cli("incidents", "report", "submit", "1", "--to", "EEA:authority")
    assert refused.code == 1 and "draft" in refused.stderr
    cli.ok("incidents", "status", "1", "confirmed", "--reason", "alias in spam")
    cli.ok(
        "incidents",
        "report",
        "assess",
        "1",
        "--reason",
        "seller of baby products",
        "--dpc-adjustment",
        "2",
        "--measure",
        "Audit every export",
    )
    cli.ok("incidents", "report", "submit", "1", "--to", "EEA:authority", "--reference", "CNIL-9")
    cli.ok(
        "incidents",
        "report",
        "decide",
        "1",
        "--for",
        "US-WA:individuals",
        "--do-not-notify",
        "--reason-code",
        "not_covered_data",
        "--explain",
        "an alias alone is not covered in WA",
    )
    updates = cli.ok("incidents", "report", "updates", "1")
    assert "CNIL-9" in updates.stdout and "do not notify" in updates.stdout
    html, pdf, data = tmp_path / "r.html", tmp_path / "r.pdf", tmp_path / "r.json"
    cli.ok(
        "incidents",
        "report",
        "export",
        "1",
        "--html",
        str(html),
        "--pdf",
        str(pdf),
        "--json",
        str(data),
    )
    report = json.loads(data.read_text())
    assert report["draft"] is False and report["severity"]["dpc"] == 3
    assert "Audit every export" in html.read_text()
    text = " ".join(p.extract_text() for p in PdfReader(str(pdf)).pages)
    assert "Acme Market SAS" in " ".join(text.split())
    listed = tmp_path / "affected.ndjson"
    written = cli.ok("incidents", "report", "affected", "1", "--out", str(listed), "--with-leaves")
    assert "2 people" in written.stdout
    key = json.loads(listed.read_text().splitlines()[0])["checkpoint"]["verifier_key"]
    verified = cli.ok("incidents", "report", "verify-affected", str(listed), "--key", key)
    assert "the list verifies" in verified.stdout
    listed.write_text("\n".join(listed.read_text().splitlines()[:-1]) + "\n")
    cut = cli("incidents", "report", "verify-affected", str(listed), "--key", key)
    assert cut.code == 1 and "does not verify" in cut.stderr
    assert cli("incidents", "report", "export", "1").code == 2
    missing = cli("incidents", "report", "show", "9")
    assert missing.code == 1 and "no incident 9" in missing.stderr
    for run in (shown, updates, written, verified):
        assert_no_address(run, ["olga.buyer@example.com", "sam.buyer@example.com"])
    assert "olga.buyer" not in html.read_text() + listed.read_text() + text
