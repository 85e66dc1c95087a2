"""Break-glass reveals through the API: requests, N-of-M approval, views, expiry, and every
refusal with its own problem code and ledger entry, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from api_testkit import Api
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailveil.access.models import RevealRequest
from mailveil.access.reveals import expire_reveals
from mailveil.db.base import utcnow
from mailveil.ledger.models import LedgerEntry
from mailveil.runtime import Runtime

ADDRESS = "dana.private@example.com"
WHY = "customer asks to merge two accounts, needs the address on file confirmed"


class World:
    def __init__(self, admin: Api) -> None:
        self.admin = admin
        self.customer = admin.customer("c-1", ADDRESS)
        self.other_customer = admin.customer("c-2", "someone.else@example.com")
        self.boss = self.employee("e-boss")
        self.agent = self.employee("e-agent", manager="e-boss")
        self.peer = self.employee("e-peer")
        self.agent_key = admin.key_for("employee", self.agent["id"])
        self.peer_approver = admin.key_for("approver", self.peer["id"])
        admin.case("case-1", self.customer["id"], self.agent["id"])
        admin.case("case-2", self.other_customer["id"], self.agent["id"])

    def employee(self, ext: str, **attrs: Any) -> Any:
        return self.admin.principal(
            "employee", ext, display_name=ext, attributes={"team": "trust desk", **attrs}
        )

    def request(self, case: str = "case-1", customer: Any = None) -> Any:
        customer = customer or self.customer
        return self.agent_key.ok(
            "post",
            "/v1/reveals",
            201,
            json={"customer_id": customer["id"], "case": case, "justification": WHY},
        )

    def answer(self, key: Api, rid: int, verb: str = "approve", **over: Any) -> Any:
        body = {"customer_id": self.customer["id"], "case": "case-1", **over}
        return key.post(f"/v1/reveals/{rid}/{verb}", json=body)


@pytest.fixture
def world(admin: Api) -> World:
    return World(admin)


def _kinds(session: Session) -> list[str]:
    return list(session.scalars(select(LedgerEntry.kind).order_by(LedgerEntry.seq)))


def _refusal_codes(session: Session) -> list[str]:
    rows = session.scalars(
        select(LedgerEntry.detail)
        .where(LedgerEntry.kind == "access_refused")
        .order_by(LedgerEntry.seq)
    )
    return [json.loads(r)["code"] for r in rows]


def test_request_approve_view_once(world: World, session: Session) -> None:
    req = world.request()
    assert req["status"] == "pending" and req["approvals_required"] == 1
    granted = world.answer(world.peer_approver, req["id"])
    assert granted.status_code == 200, granted.text
    assert granted.json()["status"] == "granted"
    view = world.agent_key.post(f"/v1/reveals/{req['id']}/view")
    assert view.status_code == 200
    assert view.json()["address"] == ADDRESS and view.json()["views_left"] == 0
    assert view.headers["cache-control"] == "no-store"
    again = world.agent_key.post(f"/v1/reveals/{req['id']}/view")
    assert again.status_code == 410 and again.json()["type"].endswith("reveal-used-up")
    assert [k for k in _kinds(session) if k.startswith("reveal")] == [
        "reveal_requested",
        "reveal_approved",
        "reveal_granted",
        "reveal_viewed",
    ]
    # The ledger records the view, never the address.
    assert ADDRESS not in json.dumps(list(session.scalars(select(LedgerEntry.leaf))))
    log = world.admin.ok("get", f"/v1/customers/{world.customer['id']}/access-log")
    assert [(e["what"], e["by"], e["ref"]) for e in log["items"]] == [
        ("real_address", "trust desk", "case-1")
    ]


def test_a_request_needs_an_open_case_of_this_customer_assigned_to_the_requester(
    world: World, session: Session
) -> None:
    bad_case = world.agent_key.post(
        "/v1/reveals",
        json={"customer_id": world.customer["id"], "case": "case-2", "justification": WHY},
    )
    assert bad_case.status_code == 403 and bad_case.json()["type"].endswith("reveal-refused")
    world.admin.case("case-3", world.customer["id"], world.peer["id"])
    not_mine = world.agent_key.post(
        "/v1/reveals",
        json={"customer_id": world.customer["id"], "case": "case-3", "justification": WHY},
    )
    assert not_mine.status_code == 403
    assert "assigned to the requesting employee" in not_mine.json()["detail"]
    assert _refusal_codes(session) == ["reveal-refused", "reveal-refused"]


@pytest.mark.parametrize(
    ("justification", "why"),
    [("too short", "at least 20"), (f"please show it, it is not {ADDRESS} for sure", "'@'")],
)
def test_justification_is_checked_and_never_echoed(
    world: World, justification: str, why: str
) -> None:
    response = world.agent_key.post(
        "/v1/reveals",
        json={
            "customer_id": world.customer["id"],
            "case": "case-1",
            "justification": justification,
        },
    )
    assert response.status_code == 422 and why in response.json()["detail"]
    assert ADDRESS not in response.text


def test_self_approval_is_refused(world: World, session: Session) -> None:
    req = world.request()
    own_approver_key = world.admin.key_for("approver", world.agent["id"])
    response = world.answer(own_approver_key, req["id"])
    assert response.status_code == 403 and response.json()["type"].endswith("self-approval")
    assert _refusal_codes(session) == ["self-approval"]


def test_reporting_line_cannot_approve_either_way(world: World) -> None:
    req = world.request()
    boss_key = world.admin.key_for("approver", world.boss["id"])
    response = world.answer(boss_key, req["id"])
    assert response.status_code == 403
    assert response.json()["type"].endswith("approver-in-reporting-line")
    # A report of the requester is refused too (the agent manages the intern).
    intern = world.employee("e-intern", manager="e-agent")
    intern_key = world.admin.key_for("approver", intern["id"])
    assert world.answer(intern_key, req["id"]).status_code == 403


def test_an_employee_key_without_the_approver_role_is_refused_and_recorded(
    world: World, session: Session
) -> None:
    req = world.request()
    peer_employee_key = world.admin.key_for("employee", world.peer["id"])
    response = world.answer(peer_employee_key, req["id"])
    assert response.status_code == 403 and response.json()["type"].endswith("not-an-approver")
    assert (
        world.admin.key_for("backend")
        .post(f"/v1/reveals/{req['id']}/approve", json={"customer_id": 1, "case": "x"})
        .status_code
        == 403
    )
    assert _refusal_codes(session) == ["not-an-approver"]


def test_an_approval_naming_another_customer_or_case_is_refused(
    world: World, session: Session
) -> None:
    req = world.request()
    wrong_case = world.answer(world.peer_approver, req["id"], case="case-2")
    assert wrong_case.status_code == 409
    assert wrong_case.json()["type"].endswith("approval-mismatch")
    wrong_customer = world.answer(
        world.peer_approver, req["id"], customer_id=world.other_customer["id"]
    )
    assert wrong_customer.status_code == 409
    unknown = world.answer(world.peer_approver, 987_654)
    assert unknown.status_code == 404 and unknown.json()["type"].endswith("reveal-not-found")
    assert _refusal_codes(session) == ["approval-mismatch", "approval-mismatch", "reveal-not-found"]
    assert world.admin.ok("get", f"/v1/reveals/{req['id']}")["status"] == "pending"


@pytest.fixture
def two_of_m(runtime: Runtime) -> Runtime:
    runtime.settings = runtime.settings.with_overrides(reveal_approvals_required=2, reveal_views=2)
    return runtime


def test_n_of_m_approval_and_replayed_approvals(
    world: World, session: Session, two_of_m: Runtime
) -> None:
    req = world.request()
    assert req["approvals_required"] == 2
    first = world.answer(world.peer_approver, req["id"])
    assert first.json()["status"] == "pending" and first.json()["approvals"] == 1
    replay = world.answer(world.peer_approver, req["id"])
    assert replay.status_code == 409 and replay.json()["type"].endswith("approval-replayed")
    # Still pending: the replay counted for nothing.
    assert world.agent_key.post(f"/v1/reveals/{req['id']}/view").status_code == 409
    third = world.employee("e-third")
    second = world.answer(world.admin.key_for("approver", third["id"]), req["id"])
    assert second.json()["status"] == "granted"
    for left in (1, 0):
        view = world.agent_key.post(f"/v1/reveals/{req['id']}/view")
        assert view.json()["views_left"] == left
    assert _refusal_codes(session) == ["approval-replayed", "reveal-not-granted"]


def test_a_denial_closes_the_request(world: World) -> None:
    req = world.request()
    denied = world.answer(world.peer_approver, req["id"], "deny", note="not needed for a merge")
    assert denied.json()["status"] == "denied"
    view = world.agent_key.post(f"/v1/reveals/{req['id']}/view")
    assert view.status_code == 409 and view.json()["type"].endswith("reveal-closed")
    late = world.answer(world.admin.key_for("approver", world.employee("e-x")["id"]), req["id"])
    assert late.status_code == 409
    # A new request for the same case may be made once the old one is closed.
    assert world.request()["status"] == "pending"


def test_only_one_open_request_per_customer_and_case(world: World) -> None:
    world.request()
    again = world.agent_key.post(
        "/v1/reveals",
        json={"customer_id": world.customer["id"], "case": "case-1", "justification": WHY},
    )
    assert again.status_code == 409


def test_an_expired_grant_is_refused_and_the_sweep_records_the_expiry(
    world: World, session: Session, runtime: Runtime
) -> None:
    req = world.request()
    world.answer(world.peer_approver, req["id"])
    session.execute(
        update(RevealRequest)
        .where(RevealRequest.id == req["id"])
        .values(grant_expires_at=utcnow() - timedelta(seconds=1))
    )
    session.flush()
    view = world.agent_key.post(f"/v1/reveals/{req['id']}/view")
    assert view.status_code == 410 and view.json()["type"].endswith("reveal-expired")
    pending = world.request(case="case-2", customer=world.other_customer)
    later = utcnow() + timedelta(hours=25)
    assert expire_reveals(session, ledger=runtime.ledger, now=later) == 2
    session.flush()
    assert world.admin.ok("get", f"/v1/reveals/{pending['id']}")["status"] == "expired"
    assert _kinds(session).count("reveal_expired") == 2


def test_only_the_requester_views_and_suspension_revokes_grants(
    world: World, session: Session
) -> None:
    req = world.request()
    world.answer(world.peer_approver, req["id"])
    peer_key = world.admin.key_for("employee", world.peer["id"])
    other = peer_key.post(f"/v1/reveals/{req['id']}/view")
    assert other.status_code == 403 and other.json()["type"].endswith("reveal-not-yours")
    assert peer_key.get(f"/v1/reveals/{req['id']}").status_code == 403
    assert peer_key.ok("get", "/v1/reveals")["items"] == []
    world.admin.ok(
        "post", f"/v1/principals/{world.agent['id']}/suspend", json={"reason": "investigation"}
    )
    assert world.admin.ok("get", f"/v1/reveals/{req['id']}")["status"] == "revoked"
    view = world.agent_key.post(f"/v1/reveals/{req['id']}/view")
    assert view.status_code == 403 and view.json()["type"].endswith("principal-suspended")
    assert "reveal_revoked" in _kinds(session)


def test_no_employee_response_carries_an_address_except_a_granted_view(world: World) -> None:
    """Drive every employee-facing route and scan each answer for any real address."""
    addresses = [ADDRESS, "someone.else@example.com"]
    key = world.agent_key
    answers = [
        key.get("/v1/customers"),
        key.get("/v1/customers", params={"scope": "all"}),
        key.get("/v1/customers/export"),
        key.get(f"/v1/customers/{world.customer['id']}/contact"),
        key.get(f"/v1/customers/{world.other_customer['id']}/contact", params={"purpose": "x"}),
        key.get("/v1/customers/c-1/contact", params={"by": "external_id"}),
        key.get("/v1/customers/424242/contact"),
        key.get(f"/v1/customers/{world.customer['id']}"),
        key.get(f"/v1/customers/{world.customer['id']}/access-log"),
        key.post(
            "/v1/disclosures", json={"customer_id": world.customer["id"], "purpose": "support"}
        ),
    ]
    req = world.request()
    answers += [
        key.get("/v1/reveals"),
        key.get(f"/v1/reveals/{req['id']}"),
        key.post(f"/v1/reveals/{req['id']}/view"),  # not granted yet
    ]
    world.answer(world.peer_approver, req["id"])
    answers.append(key.get(f"/v1/reveals/{req['id']}"))
    granted_view = key.post(f"/v1/reveals/{req['id']}/view")
    answers.append(key.post(f"/v1/reveals/{req['id']}/view"))  # used up
    for response in answers:
        for address in addresses:
            assert address not in response.text, response.request.url
    assert granted_view.json()["address"] == ADDRESS
