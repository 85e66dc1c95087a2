"""The privacy invariant across the core: drive the API through success and every kind of
failure, then scan every answer, log line, metric and ledger row for the real addresses."""

import json
import logging
from pathlib import Path

import structlog
from api_testkit import Api
from sqlalchemy import text
from sqlalchemy.orm import Session

from mailveil.logs import configure_logging
from mailveil.runtime import Runtime

REAL = [f"secret.person{i}@example-mail.com" for i in range(4)] + ["Mixed.Case@Example.ORG"]


def _scan(haystack: str) -> list[str]:
    low = haystack.lower()
    return [a for a in REAL if a.lower() in low]


def test_no_real_address_in_answers_logs_metrics_or_ledger(
    backend: Api, investigator: Api, runtime: Runtime, session: Session, tmp_path: Path
) -> None:
    configure_logging(runtime.settings)
    seen: list[str] = []
    try:

        def record(response: object) -> None:
            seen.append(response.text)  # type: ignore[attr-defined]

        seller = backend.principal("seller", "s-1", display_name="Shop")
        customers = []
        for i, address in enumerate(REAL):
            r = backend.post(
                "/v1/customers", json={"external_id": f"c-{i}", "email": address, "country": "DE"}
            )
            record(r)
            customers.append(r.json())
        # Failures that involve the address: duplicate, invalid, malformed, wrong types.
        for payload in [
            {"external_id": "dup", "email": REAL[0].upper(), "country": "DE"},
            {"external_id": "bad", "email": REAL[1] + "@@", "country": "DE"},
            {"external_id": ["x"], "email": REAL[2], "country": "DE"},
            {"external_id": "c-x", "email": REAL[3], "country": "XX"},
            {"external_id": "c-y", "email": REAL[4], "country": "DE", "extra": REAL[4]},
        ]:
            record(backend.post("/v1/customers", json=payload))
        record(
            backend.post(
                "/v1/customers",
                content=f'{{"email": "{REAL[0]}"',
                headers={"content-type": "application/json"},
            )
        )
        bulk = "\n".join(
            [
                json.dumps({"external_id": "b1", "email": REAL[0], "country": "DE"}),
                f'{{"email": "{REAL[1]}", broken',
                json.dumps({"external_id": "b2", "email": REAL[2] + ".", "country": "DE"}),
            ]
        )
        record(
            backend.post(
                "/v1/customers", content=bulk, headers={"content-type": "application/x-ndjson"}
            )
        )
        for c in customers:
            record(
                backend.post(
                    "/v1/relationships",
                    json={
                        "type": "order",
                        "external_id": f"o-{c['id']}",
                        "customer_id": c["id"],
                        "seller_id": seller["id"],
                    },
                )
            )
            record(
                backend.post(
                    "/v1/disclosures",
                    json={"customer_id": c["id"], "principal_id": seller["id"], "purpose": "order"},
                )
            )
            record(
                backend.post(
                    "/v1/disclosures",
                    json={
                        "customer_id": c["id"],
                        "principal_id": seller["id"],
                        "purpose": "marketing",
                    },
                )
            )
        # Someone tries to use a real address where an alias goes, or as an id.
        record(investigator.get(f"/v1/aliases/{REAL[0]}"))
        record(backend.get("/v1/customers", params={"external_id": REAL[1]}))
        record(backend.get(f"/v1/customers/{REAL[2]}"))
        record(
            backend.post(
                "/v1/disclosures",
                json={
                    "customer_external_id": REAL[3],
                    "principal_kind": "seller",
                    "principal_external_id": "s-1",
                    "purpose": "order",
                },
            )
        )
        for c in customers:
            record(backend.get(f"/v1/customers/{c['id']}"))
        record(backend.get("/v1/customers"))
        record(backend.client.get("/metrics"))
        record(backend.client.get("/openapi.json"))

        for handler in logging.getLogger().handlers:
            handler.flush()
        logs = (runtime.settings.logs_dir / "mailveil.log").read_text()
        ledger = "\n".join(
            session.execute(text("SELECT CAST(leaf AS TEXT) FROM ledger_entries")).scalars()
        )
        assert ledger, "the scenario wrote ledger entries"
        leaks = [t for t in seen if _scan(t)]
        assert leaks == []
        assert _scan(logs) == []
        assert _scan(ledger) == []
    finally:
        for handler in logging.getLogger().handlers[:]:
            handler.close()
            logging.getLogger().removeHandler(handler)
        structlog.reset_defaults()
