import json
from typing import Any

from api_testkit import Api
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.ledger.models import LedgerEntry

ADDRESS = "carol.buyer@example.com"


def _world(backend: Api) -> dict[str, Any]:
    customer = backend.customer("c-1", ADDRESS)
    seller = backend.principal("seller", "s-1", display_name="Acme Toys")
    other = backend.principal("seller", "s-2", display_name="Other Shop")
    backend.order("o-1", customer["id"], seller["id"])
    return {"customer": customer, "seller": seller, "other": other}


def test_allowed_disclosure_returns_stable_aliases(backend: Api, session: Session) -> None:
    w = _world(backend)
    req = {
        "customer_id": w["customer"]["id"],
        "principal_id": w["seller"]["id"],
        "purpose": "order",
        "ref": "o-1",
    }
    first = backend.ok("post", "/v1/disclosures", 201, json=req)
    again = backend.ok("post", "/v1/disclosures", 201, json=req)
    assert first["status"] == "allowed" and first["minted"] is True
    assert again["alias"] == first["alias"] and again["minted"] is False
    assert first["alias"].endswith("@relay.mailveil.localhost")
    assert first["reverse_alias"] != first["alias"]
    kinds = session.scalars(select(LedgerEntry.kind).order_by(LedgerEntry.seq)).all()
    assert kinds == ["disclosure", "disclosure"]


def test_by_external_ids(backend: Api) -> None:
    _world(backend)
    body = backend.ok(
        "post",
        "/v1/disclosures",
        201,
        json={
            "customer_external_id": "c-1",
            "principal_kind": "seller",
            "principal_external_id": "s-1",
            "purpose": "order",
            "ref": "o-1",
        },
    )
    assert body["status"] == "allowed"


def test_denial_is_403_with_reason_and_is_in_the_ledger(backend: Api, session: Session) -> None:
    w = _world(backend)
    response = backend.post(
        "/v1/disclosures",
        json={
            "customer_id": w["customer"]["id"],
            "principal_id": w["other"]["id"],
            "purpose": "order",
        },
    )
    assert response.status_code == 403
    problem = response.json()
    assert problem["type"] == "urn:mailveil:problem:policy-denied"
    assert "order" in problem["detail"]
    entry = session.get(LedgerEntry, problem["ledger_seq"])
    assert entry is not None and entry.kind == "disclosure_denied"
    assert entry.subject == f"customer:{w['customer']['id']}"
    assert ADDRESS not in entry.leaf


def test_seller_key_is_pinned_to_its_principal(admin: Api) -> None:
    w = _world(admin)
    seller_api = admin.key_for("seller", w["seller"]["id"])
    mine = seller_api.ok(
        "post",
        "/v1/disclosures",
        201,
        json={"customer_id": w["customer"]["id"], "purpose": "order", "ref": "o-1"},
    )
    assert mine["principal_id"] == w["seller"]["id"]
    theirs = seller_api.post(
        "/v1/disclosures",
        json={
            "customer_id": w["customer"]["id"],
            "principal_id": w["other"]["id"],
            "purpose": "order",
        },
    )
    assert theirs.status_code == 403
    assert theirs.json()["type"] == "urn:mailveil:problem:forbidden"


def test_unknown_ids_are_404(backend: Api) -> None:
    w = _world(backend)
    response = backend.post(
        "/v1/disclosures",
        json={"customer_id": 424242, "principal_id": w["seller"]["id"], "purpose": "order"},
    )
    assert response.status_code == 404


def test_request_must_name_each_side_once(backend: Api) -> None:
    response = backend.post(
        "/v1/disclosures",
        json={"customer_id": 1, "customer_external_id": "c-1", "principal_id": 1, "purpose": "x"},
    )
    assert response.status_code == 422


def test_bulk_ndjson_answers_each_line_in_order(backend: Api, session: Session) -> None:
    w = _world(backend)
    c, s, o = w["customer"]["id"], w["seller"]["id"], w["other"]["id"]
    lines = [
        json.dumps({"customer_id": c, "principal_id": s, "purpose": "order", "ref": "o-1"}),
        json.dumps({"customer_id": c, "principal_id": o, "purpose": "order"}),
        "{broken",
        json.dumps({"customer_id": 999, "principal_id": s, "purpose": "order"}),
        json.dumps({"customer_id": c, "principal_id": s}),
    ]
    response = backend.post(
        "/v1/disclosures",
        content="\n".join(lines),
        headers={"content-type": "application/x-ndjson"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    results = [json.loads(x) for x in response.text.splitlines()]
    assert [(r["line"], r["status"]) for r in results] == [
        (1, "allowed"),
        (2, "denied"),
        (3, "error"),
        (4, "error"),
        (5, "error"),
    ]
    assert results[3]["error"] == "not-found"
    kinds = session.scalars(select(LedgerEntry.kind).order_by(LedgerEntry.seq)).all()
    assert kinds == ["disclosure", "disclosure_denied"]


def test_bulk_with_idempotency_key_replays(backend: Api, session: Session) -> None:
    w = _world(backend)
    body = json.dumps(
        {
            "customer_id": w["customer"]["id"],
            "principal_id": w["seller"]["id"],
            "purpose": "order",
            "ref": "o-1",
        }
    )
    headers = {"content-type": "application/x-ndjson", "Idempotency-Key": "b-1"}
    first = backend.post("/v1/disclosures", content=body, headers=headers)
    again = backend.post("/v1/disclosures", content=body, headers=headers)
    assert first.text == again.text and again.headers["Idempotent-Replayed"] == "true"
    assert len(session.scalars(select(LedgerEntry.seq)).all()) == 1
