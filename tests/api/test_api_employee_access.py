"""Employee access through the API: contact lookups, lists, exports, canaries, limits,
suspension and the customer-visible access log, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from api_testkit import Api
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.access.models import Canary
from mailveil.contacts.models import Customer
from mailveil.ledger.models import LedgerEntry

DOMAIN = "example.com"


def _address(n: int) -> str:
    return f"buyer{n}@{DOMAIN}"


def _employee(admin: Api, ext: str, **attrs: Any) -> tuple[dict[str, Any], Api]:
    attributes = {"team": "payments support", "role": "agent", "region": "EU", **attrs}
    employee = admin.principal("employee", ext, display_name=ext.title(), attributes=attributes)
    return employee, admin.key_for("employee", employee["id"])


def _customers(admin: Api, count: int, *, start: int = 0, country: str = "DE") -> list[Any]:
    return [
        admin.customer(f"cust-{n:06d}", _address(n), country) for n in range(start, start + count)
    ]


def _kinds(session: Session) -> list[str]:
    return list(session.scalars(select(LedgerEntry.kind).order_by(LedgerEntry.seq)))


def _refusals(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(LedgerEntry.detail)
        .where(LedgerEntry.kind == "access_refused")
        .order_by(LedgerEntry.seq)
    )
    return [json.loads(r) for r in rows]


def test_contact_gives_the_employees_own_alias_for_an_assigned_case(
    admin: Api, session: Session
) -> None:
    emp, key = _employee(admin, "e-ann")
    _other, other_key = _employee(admin, "e-bob")
    (cust,) = _customers(admin, 1)
    admin.case("case-1", cust["id"], emp["id"])
    mine = key.ok("get", f"/v1/customers/{cust['id']}/contact", params={"ref": "case-1"})
    assert mine["alias"].endswith("@relay.mailveil.localhost")
    assert mine["policies"] == ["employee-assigned-case"]
    by_ext = key.ok("get", "/v1/customers/cust-000000/contact", params={"by": "external_id"})
    assert by_ext["alias"] == mine["alias"]
    # The other employee has no case of this customer: a denial, with its reason, ledgered.
    denied = other_key.get(f"/v1/customers/{cust['id']}/contact")
    assert denied.status_code == 403
    assert denied.json()["type"].endswith("policy-denied")
    assert "no open support case" in denied.json()["detail"]
    assert _kinds(session)[-1] == "disclosure_denied"
    text = json.dumps([mine, by_ext, denied.json()])
    assert _address(0) not in text


def test_backend_and_sellers_cannot_use_the_employee_contact_endpoint(admin: Api) -> None:
    (cust,) = _customers(admin, 1)
    backend = admin.key_for("backend")
    assert backend.get(f"/v1/customers/{cust['id']}/contact").status_code == 403


def test_guessing_customer_ids_is_refused_ledgered_and_counted(
    admin: Api, session: Session
) -> None:
    _emp, key = _employee(admin, "e-ann")
    for guess in (999_001, 999_002):
        response = key.get(f"/v1/customers/{guess}/contact")
        assert response.status_code == 404
        body = response.json()
        assert body["type"].endswith("unknown-customer")
        assert isinstance(body["ledger_seq"], int)
    refusals = _refusals(session)
    assert [r["code"] for r in refusals] == ["unknown-customer", "unknown-customer"]
    assert key.get("/v1/customers/not-a-number/contact").status_code == 422
    metrics = admin.client.get("/metrics").text
    assert 'mailveil_access_refusals_total{code="unknown-customer"} 2.0' in metrics


def test_list_returns_only_this_employees_aliases_paged_by_external_id(
    admin: Api, session: Session
) -> None:
    emp, key = _employee(admin, "e-ann")
    other, other_key = _employee(admin, "e-bob")
    customers = _customers(admin, 6)
    for n, cust in enumerate(customers[:4]):
        admin.case(f"case-{n}", cust["id"], emp["id"])
    admin.case("case-x", customers[5]["id"], other["id"])
    first = key.ok("get", "/v1/customers", params={"limit": 3})
    assert [r["external_id"] for r in first["items"]] == [
        "cust-000000",
        "cust-000001",
        "cust-000002",
    ]
    second = key.ok("get", "/v1/customers", params={"limit": 3, "after": first["next"]})
    assert [r["external_id"] for r in second["items"]] == ["cust-000003"]
    assert second["next"] is None
    theirs = other_key.ok("get", "/v1/customers")
    assert [r["external_id"] for r in theirs["items"]] == ["cust-000005"]
    # Each row is this employee's alias, the same the contact endpoint gives.
    contact = key.ok("get", f"/v1/customers/{customers[0]['id']}/contact")
    assert first["items"][0]["alias"] == contact["alias"]
    assert set(first["items"][0]) == {"external_id", "country", "alias", "reverse_alias"}
    # scope=all: the others are withheld by policy, not shown, and counted in the summary.
    everyone = key.ok("get", "/v1/customers", params={"scope": "all"})
    assert len(everyone["items"]) == 4
    summary = json.loads(
        session.scalars(
            select(LedgerEntry.detail)
            .where(LedgerEntry.kind == "employee_list")
            .order_by(LedgerEntry.seq.desc())
        ).first()
        or "{}"
    )
    assert summary["withheld"] == 2 and summary["rows"] == 4
    assert "buyer" not in json.dumps([first, second, theirs, everyone])


def test_big_lists_carry_stable_canaries_that_look_like_real_rows(
    admin: Api, session: Session
) -> None:
    emp, key = _employee(admin, "e-ann")
    other, other_key = _employee(admin, "e-bob")
    customers = _customers(admin, 14)
    for n, cust in enumerate(customers):
        admin.case(f"case-{n}", cust["id"], emp["id"])
        admin.case(f"case-o{n}", cust["id"], other["id"])
    first = key.ok("get", "/v1/customers")
    again = key.ok("get", "/v1/customers")
    real = {c["external_id"] for c in customers}
    canary_rows = [r for r in first["items"] if r["external_id"] not in real]
    assert len(canary_rows) == 2  # canaries_per_country for DE
    assert first == again  # stable for this employee
    for row in canary_rows:
        # Same shape: the prefix of real ids, digits redrawn; same country; an alias.
        assert row["external_id"].startswith("cust-") and len(row["external_id"]) == 11
        assert row["country"] == "DE" and row["alias"].endswith("@relay.mailveil.localhost")
    assert [r["external_id"] for r in first["items"]] == sorted(
        r["external_id"] for r in first["items"]
    )
    # Another employee gets its own canaries, never this one's.
    theirs = other_key.ok("get", "/v1/customers")
    their_canaries = {r["external_id"] for r in theirs["items"]} - real
    assert len(their_canaries) == 2 and not their_canaries & {r["external_id"] for r in canary_rows}
    owners = dict(session.execute(select(Canary.customer_id, Canary.principal_id)).all())
    assert sorted(owners.values()) == sorted([emp["id"], emp["id"], other["id"], other["id"]])
    # Never counted in customer-facing numbers: the backend's list leaves them out.
    backend_ids = {c["external_id"] for c in admin.ok("get", "/v1/customers")["items"]}
    assert backend_ids == real
    flagged = session.scalars(select(Customer.external_id).where(Customer.is_canary)).all()
    assert {r["external_id"] for r in canary_rows} <= set(flagged)


def test_small_lists_have_no_canaries(admin: Api) -> None:
    emp, key = _employee(admin, "e-ann")
    customers = _customers(admin, 5)
    for n, cust in enumerate(customers):
        admin.case(f"case-{n}", cust["id"], emp["id"])
    rows = key.ok("get", "/v1/customers")["items"]
    assert {r["external_id"] for r in rows} == {c["external_id"] for c in customers}


def test_export_is_csv_of_the_same_rows(admin: Api) -> None:
    emp, key = _employee(admin, "e-ann")
    customers = _customers(admin, 3)
    for n, cust in enumerate(customers):
        admin.case(f"case-{n}", cust["id"], emp["id"])
    response = key.get("/v1/customers/export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    listed = key.ok("get", "/v1/customers")["items"]
    assert rows == listed
    assert "buyer" not in response.text
    paged = key.get("/v1/customers/export", params={"limit": 2})
    assert paged.headers["x-next-after"] == "cust-000001"
    assert admin.key_for("backend").get("/v1/customers/export").status_code == 403


@pytest.fixture
def tight(runtime: Any) -> Any:
    runtime.settings = runtime.settings.with_overrides(
        employee_rows_per_hour=5, employee_rows_per_day=8
    )
    return runtime


def test_hourly_and_daily_limits_refuse_with_429_and_roll_back(
    admin: Api, session: Session, tight: Any
) -> None:
    emp, key = _employee(admin, "e-ann")
    customers = _customers(admin, 7)
    for n, cust in enumerate(customers):
        admin.case(f"case-{n}", cust["id"], emp["id"])
    assert len(key.ok("get", "/v1/customers", params={"limit": 4})["items"]) == 4
    before = _kinds(session).count("disclosure")
    response = key.get("/v1/customers", params={"limit": 4, "after": "cust-000003"})
    assert response.status_code == 429
    body = response.json()
    assert body["type"].endswith("limit-exceeded")
    assert "5 customers per hour" in body["detail"]
    # The refused page disclosed nothing: its work was rolled back, only the refusal stays.
    assert _kinds(session).count("disclosure") == before
    assert _refusals(session)[-1]["code"] == "limit-exceeded"
    # One more row fits the hour.
    key.ok("get", f"/v1/customers/{customers[4]['id']}/contact")
    assert key.get(f"/v1/customers/{customers[5]['id']}/contact").status_code == 429


def test_operator_policy_can_give_a_role_other_limits(
    admin: Api, tight: Any, tmp_path: Any
) -> None:
    from mailveil.policy import PolicyEngine

    (tmp_path / "bulk.cedar").write_text(
        """
@id("fraud-analysts-bigger-limits")
@reason("fraud analysts may list up to 100 customers an hour")
permit (principal is Mailveil::Employee, action == Mailveil::Action::"list", resource)
when { principal.role == "fraud" && context.used_hour + context.requested <= 100 };
"""
    )
    tight.policy = PolicyEngine.load(tight.settings.with_overrides(policy_dir=str(tmp_path)))
    _emp, agent = _employee(admin, "e-ann")
    analyst, fraud = _employee(admin, "e-fay", role="fraud")
    customers = _customers(admin, 7)
    for n, cust in enumerate(customers):
        admin.case(f"case-{n}", cust["id"], analyst["id"])
        admin.case(f"case-a{n}", cust["id"], _emp["id"])
    assert len(fraud.ok("get", "/v1/customers")["items"]) == 7
    assert agent.get("/v1/customers").status_code == 429


def test_suspension_revokes_aliases_and_refuses_everything_after(
    admin: Api, session: Session
) -> None:
    emp, key = _employee(admin, "e-ann")
    customers = _customers(admin, 2)
    for n, cust in enumerate(customers):
        admin.case(f"case-{n}", cust["id"], emp["id"])
    rows = key.ok("get", "/v1/customers")["items"]
    done = admin.ok("post", f"/v1/principals/{emp['id']}/suspend", json={"reason": "sold data"})
    assert done["aliases_revoked"] == 2
    for row in rows:
        report = admin.key_for("investigator").ok("get", f"/v1/aliases/{row['alias']}")
        assert report["alias"]["revoked_at"] is not None
        assert report["history"][-1]["kind"] == "alias_revoked"
    response = key.get("/v1/customers")
    assert response.status_code == 403
    assert response.json()["type"].endswith("principal-suspended")
    assert key.get(f"/v1/customers/{customers[0]['id']}/contact").status_code == 403
    assert _refusals(session)[-1]["code"] == "principal-suspended"
    again = admin.post(f"/v1/principals/{emp['id']}/suspend", json={"reason": "twice"})
    assert again.status_code == 409
    admin.ok("post", f"/v1/principals/{emp['id']}/reinstate", json={"reason": "cleared"})
    # Reinstated, but the revoked aliases are not silently re-issued.
    response = key.get(f"/v1/customers/{customers[0]['id']}/contact")
    assert response.status_code == 403 and "revoked" in response.json()["detail"]


def test_patching_status_to_suspended_contains_like_suspend(admin: Api) -> None:
    emp, key = _employee(admin, "e-ann")
    (cust,) = _customers(admin, 1)
    admin.case("case-1", cust["id"], emp["id"])
    alias = key.ok("get", f"/v1/customers/{cust['id']}/contact")["alias"]
    admin.ok("patch", f"/v1/principals/{emp['id']}", json={"status": "suspended"})
    report = admin.key_for("investigator").ok("get", f"/v1/aliases/{alias}")
    assert report["alias"]["revoked_at"] is not None
    assert report["principal"]["status"] == "suspended"


def test_access_log_names_teams_not_people_and_leaves_out_canaries(
    admin: Api, runtime: Any
) -> None:
    emp, key = _employee(admin, "e-ann", team="returns desk")
    seller = admin.principal("seller", "s-1", display_name="Acme Toys")
    customers = _customers(admin, 12)
    for n, cust in enumerate(customers):
        admin.case(f"case-{n}", cust["id"], emp["id"])
    cust = customers[0]
    admin.order("o-1", cust["id"], seller["id"])
    admin.ok(
        "post",
        "/v1/disclosures",
        201,
        json={
            "customer_id": cust["id"],
            "principal_id": seller["id"],
            "purpose": "order",
            "ref": "o-1",
        },
    )
    key.ok("get", f"/v1/customers/{cust['id']}/contact", params={"ref": "case-0"})
    key.ok("get", "/v1/customers")  # 12 rows: canaries are mixed in
    log = admin.ok("get", f"/v1/customers/{cust['id']}/access-log")
    seen = [(e["by_kind"], e["by"], e["what"], e["ref"]) for e in log["items"]]
    assert seen == [
        ("seller", "Acme Toys", "alias", "o-1"),
        ("employee", "returns desk", "alias", "case-0"),
        ("employee", "returns desk", "alias", None),
    ]
    assert all("person" not in e for e in log["items"])
    assert "E-Ann" not in json.dumps(log)
    runtime.settings = runtime.settings.with_overrides(access_log_names_person=True)
    named = admin.ok("get", f"/v1/customers/{cust['id']}/access-log")
    assert named["items"][1]["person"] == "E-Ann"
    paged = admin.ok("get", f"/v1/customers/{cust['id']}/access-log", params={"limit": 2})
    rest = admin.ok(
        "get", f"/v1/customers/{cust['id']}/access-log", params={"after": paged["next"]}
    )
    assert len(paged["items"]) == 2 and len(rest["items"]) == 1
    assert key.get(f"/v1/customers/{cust['id']}/access-log").status_code == 403


def test_employee_disclosures_take_the_limited_path_and_never_bulk(
    admin: Api, session: Session, tight: Any
) -> None:
    emp, key = _employee(admin, "e-ann")
    customers = _customers(admin, 6)
    for n, cust in enumerate(customers):
        admin.case(f"case-{n}", cust["id"], emp["id"])
    for cust in customers[:5]:
        key.ok(
            "post", "/v1/disclosures", 201, json={"customer_id": cust["id"], "purpose": "support"}
        )
    over = key.post(
        "/v1/disclosures", json={"customer_id": customers[5]["id"], "purpose": "support"}
    )
    assert over.status_code == 429 and over.json()["type"].endswith("limit-exceeded")
    bulk = key.post(
        "/v1/disclosures",
        content=json.dumps({"customer_id": customers[0]["id"], "purpose": "support"}) + "\n",
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert bulk.status_code == 403 and "limited per hour" in bulk.json()["detail"]
    assert _refusals(session)[-1]["code"] == "limit-exceeded"
