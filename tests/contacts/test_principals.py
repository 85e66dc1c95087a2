"""Principals and their per-kind attributes; orders and support cases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from contacts_testkit import snapshot
from sqlalchemy.orm import Session

from mailveil.contacts.principals import (
    create_principal,
    get_principal,
    get_principal_by_external_id,
    list_principals,
    principal_view,
    update_principal,
)
from mailveil.contacts.relationships import (
    create_case,
    create_order,
    get_case_by_external_id,
    get_order,
    get_order_by_external_id,
    list_cases,
    list_orders,
    update_case,
    update_order,
)
from mailveil.errors import Conflict, Duplicate, InvalidInput, NotFound
from mailveil.vault import Vault
from world_kit import customer, employee, seller, service


def test_seller_attributes_are_normalised(session: Session) -> None:
    p = seller(
        session,
        attributes={
            "sending_addresses": ["Shop@Acme.EXAMPLE", "shop@acme.example"],
            "sending_domains": ["Mail.Acme.example", "bücher.de"],
        },
    )
    assert p.attributes == {
        "sending_addresses": ["shop@acme.example"],
        "sending_domains": ["mail.acme.example", "xn--bcher-kva.de"],
    }
    assert principal_view(p)["kind"] == "seller"


def test_employee_and_service_attributes(session: Session) -> None:
    boss = employee(session, 1)
    e = employee(
        session,
        2,
        attributes={"team": "returns", "role": "lead", "region": "emea", "manager": "emp-1"},
    )
    assert e.attributes["manager"] == "emp-1" and boss.attributes["manager"] is None
    svc = service(session, 1, templates=["order-shipped", "order-shipped", "refund.issued"])
    assert svc.attributes == {"templates": ["order-shipped", "refund.issued"]}


@pytest.mark.parametrize(
    ("kind", "attributes", "fragment"),
    [
        ("seller", {"team": "x"}, "unknown attribute 'team' for a seller"),
        ("seller", {"sending_addresses": "a@b.example"}, "must be a list"),
        ("seller", {"sending_addresses": ["not an address"]}, "not a valid email address"),
        ("seller", {"sending_domains": ["bad domain"]}, "not a valid domain name"),
        ("employee", {"templates": ["a"]}, "unknown attribute 'templates' for a employee"),
        ("employee", {"team": 5}, "team must be text"),
        ("employee", {"manager": "ext-1"}, "own manager"),
        ("service", {"templates": ["Bad Name"]}, "templates"),
        ("service", {"sending_domains": []}, "unknown attribute"),
        ("service", [], "must be an object"),
        ("robot", {}, "kind must be one of: seller, employee, service"),
    ],
)
def test_wrong_attributes_for_the_kind(
    session: Session, kind: str, attributes: object, fragment: str
) -> None:
    before = snapshot(session)
    with pytest.raises(InvalidInput) as info:
        create_principal(session, kind=kind, external_id="ext-1", attributes=attributes)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert snapshot(session) == before


def test_external_id_unique_per_kind(session: Session) -> None:
    s = seller(session, 1)
    create_principal(session, kind="employee", external_id="seller-1")  # other kind: fine
    with pytest.raises(Duplicate, match=f"principal {s.id}"):
        create_principal(session, kind="seller", external_id="seller-1")
    assert get_principal_by_external_id(session, "seller", "seller-1").id == s.id
    with pytest.raises(NotFound):
        get_principal_by_external_id(session, "service", "seller-1")
    with pytest.raises(NotFound, match="no principal 4242"):
        get_principal(session, 4242)


def test_update_validates_before_writing(session: Session) -> None:
    s = seller(session, 1)
    with pytest.raises(InvalidInput):
        update_principal(session, s.id, display_name="Renamed", status="banned")
    assert s.display_name == "Seller 1 Ltd" and s.status == "active"
    update_principal(
        session, s.id, status="suspended", attributes={"sending_domains": ["a.example"]}
    )
    assert s.status == "suspended" and s.attributes["sending_domains"] == ["a.example"]


def test_list_principals_by_kind_and_cursor(session: Session) -> None:
    made = [seller(session, i) for i in range(3)] + [employee(session, 1)]
    assert [p.id for p in list_principals(session, kind="seller")] == [p.id for p in made[:3]]
    page = list_principals(session, after_id=made[0].id, limit=2)
    assert [p.id for p in page] == [made[1].id, made[2].id]


# -- relationships ----------------------------------------------------------------------------


def test_orders(session: Session, vault: Vault) -> None:
    c = customer(session, vault, 1)
    s = seller(session, 1)
    o = create_order(
        session,
        external_id="o-1",
        customer_id=c.id,
        seller_id=s.id,
        placed_at="2024-03-01T10:00:00Z",
    )
    assert o.placed_at == datetime(2024, 3, 1, 10, tzinfo=UTC) and o.status == "placed"
    update_order(session, o.id, status="shipped")
    assert get_order(session, o.id).status == "shipped"
    assert get_order_by_external_id(session, "o-1").id == o.id
    assert [x.id for x in list_orders(session, customer_id=c.id)] == [o.id]
    assert list_orders(session, seller_id=s.id + 100) == []


@pytest.mark.parametrize(
    ("change", "error", "fragment"),
    [
        ({"status": "lost"}, InvalidInput, "status must be one of"),
        ({"customer_id": 999}, NotFound, "no customer 999"),
        ({"seller_id": 999}, NotFound, "no principal 999"),
        ({"seller_id": "employee"}, Conflict, "is a employee; the seller of an order"),
        ({"placed_at": "yesterday"}, InvalidInput, "ISO 8601"),
        ({"placed_at": "2024-03-01T10:00:00"}, InvalidInput, "time zone"),
        ({"external_id": "o-1"}, Duplicate, "order with external id 'o-1' already exists"),
    ],
)
def test_bad_orders(
    session: Session,
    vault: Vault,
    change: dict[str, object],
    error: type[Exception],
    fragment: str,
) -> None:
    c = customer(session, vault, 1)
    s = seller(session, 1)
    e = employee(session, 1)
    create_order(session, external_id="o-1", customer_id=c.id, seller_id=s.id)
    args: dict[str, object] = {"external_id": "o-2", "customer_id": c.id, "seller_id": s.id}
    args.update(change)
    if args["seller_id"] == "employee":
        args["seller_id"] = e.id
    before = snapshot(session)
    with pytest.raises(error) as info:
        create_order(session, **args)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert snapshot(session) == before


def test_support_cases(session: Session, vault: Vault) -> None:
    c = customer(session, vault, 1)
    e = employee(session, 1)
    s = seller(session, 1)
    k = create_case(session, external_id="k-1", customer_id=c.id, assignee_id=e.id)
    assert k.status == "open" and k.closed_at is None
    with pytest.raises(Conflict, match="is a seller; the assignee"):
        update_case(session, k.id, assignee_id=s.id)
    assert k.assignee_id == e.id
    update_case(session, k.id, status="closed")
    assert k.closed_at is not None
    update_case(session, k.id, status="open", assignee_id=None)
    assert k.closed_at is None and k.assignee_id is None
    assert get_case_by_external_id(session, "k-1").id == k.id
    assert [x.id for x in list_cases(session, status="open")] == [k.id]
    with pytest.raises(Duplicate):
        create_case(session, external_id="k-1", customer_id=c.id)
    with pytest.raises(InvalidInput):
        list_cases(session, status="pending")


def test_an_address_as_an_attribute_name_is_not_echoed(session: Session) -> None:
    with pytest.raises(InvalidInput) as info:
        create_principal(
            session,
            kind="seller",
            external_id="s",
            attributes={"someone@private-mailbox.example": ["x"]},
        )
    assert "private-mailbox" not in str(info.value)
    assert "(value not repeated)" in str(info.value)
