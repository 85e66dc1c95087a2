"""Disclosures: every default rule on both backends, denials in the ledger, bulk, leaks."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from contacts_testkit import ledger_rows, snapshot
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.customers import (
    create_customer,
    delete_customer,
    get_customer_by_address,
    import_customers,
)
from mailveil.contacts.disclosures import (
    DisclosureRequest,
    DisclosureResult,
    ExternalDisclosureRequest,
    disclose,
    disclose_bulk,
    disclose_external,
)
from mailveil.contacts.models import Alias, Customer
from mailveil.contacts.principals import update_principal
from mailveil.contacts.relationships import update_case
from mailveil.errors import InvalidInput, MailveilError, NotFound
from mailveil.ledger.append import Ledger
from mailveil.ledger.models import LedgerEntry
from mailveil.ledger.verify import verify_ledger
from mailveil.policy import PolicyEngine
from mailveil.vault import Vault
from world_kit import SECRET_DOMAIN, case, customer, employee, order, seller, service

Disclose = Callable[..., DisclosureResult]


@pytest.fixture
def ask(session: Session, settings: Settings, policy: PolicyEngine, ledger: Ledger) -> Disclose:
    def run(
        cid: int, pid: int, purpose: str = "order", ref: str | None = "ref-1", **kw: object
    ) -> DisclosureResult:
        return disclose(
            session,
            settings=kw.pop("settings", settings),
            policy=policy,
            ledger=ledger,  # type: ignore[arg-type]
            customer_id=cid,
            principal_id=pid,
            purpose=purpose,
            ref=ref,
            actor="apikey:1",
        )

    return run


# -- sellers ----------------------------------------------------------------------------------


def test_seller_with_a_recent_order_gets_the_alias(
    session: Session, vault: Vault, ask: Disclose
) -> None:
    c, s = customer(session, vault, 1), seller(session, 1)
    order(session, c, s, days_ago=3)
    r = ask(c.id, s.id)
    assert r.allowed and r.minted and r.status == "allowed"
    assert r.policy_ids == ("seller-recent-order",)
    (entry,) = ledger_rows(session)
    assert (entry.kind, entry.actor, entry.subject, entry.alias) == (
        "disclosure",
        "apikey:1",
        f"customer:{c.id}",
        r.alias,
    )
    assert (entry.purpose, entry.ref, entry.seq) == ("order", "ref-1", r.ledger_seq)
    assert json.loads(entry.detail) == {
        "principal": f"principal:{s.id}",
        "policies": ["seller-recent-order"],
        "minted": True,
    }
    again = ask(c.id, s.id)
    assert again.alias == r.alias and not again.minted


@pytest.mark.parametrize(
    ("days_ago", "allowed"), [(0, True), (89.9, True), (90.5, True), (91.5, False), (400, False)]
)
def test_seller_window_boundary(
    session: Session, vault: Vault, ask: Disclose, days_ago: float, allowed: bool
) -> None:
    c, s = customer(session, vault, 1), seller(session, 1)
    order(session, c, s, days_ago=days_ago)
    r = ask(c.id, s.id)
    assert r.allowed is allowed
    if not allowed:
        assert r.reason == "no order with this seller in the last 90 days"


def test_seller_denials_are_ledgered_with_their_reason(
    session: Session, settings: Settings, vault: Vault, ask: Disclose
) -> None:
    c, s, other = customer(session, vault, 1), seller(session, 1), seller(session, 2)
    order(session, c, other)  # an order, but with another seller
    r = ask(c.id, s.id)
    assert not r.allowed and r.alias is None and r.status == "denied"
    assert r.reason == "no order with this seller in the last 90 days"
    order(session, c, s, days_ago=20)
    narrow = settings.with_overrides(seller_contact_window_days=10)
    r2 = ask(c.id, s.id, settings=narrow)
    assert r2.reason == "no order with this seller in the last 10 days"
    r3 = ask(c.id, s.id, purpose="marketing")
    assert r3.reason == 'a seller is only given aliases for purpose "order"'
    assert r3.policy_ids == ("seller-purpose",)
    entries = ledger_rows(session)
    assert [e.kind for e in entries] == ["disclosure_denied"] * 3
    assert [json.loads(e.detail)["reason"] for e in entries] == [r.reason, r2.reason, r3.reason]
    assert all(e.alias is None for e in entries)
    assert session.scalar(select(Alias.id)) is None  # nothing minted on denial


def test_suspended_principal_and_deleted_customer_are_forbidden(
    session: Session, vault: Vault, ask: Disclose
) -> None:
    c, s = customer(session, vault, 1), seller(session, 1)
    order(session, c, s)
    update_principal(session, s.id, status="suspended")
    r = ask(c.id, s.id)
    assert (r.allowed, r.reason, r.policy_ids) == (
        False,
        "the principal is suspended",
        ("principal-suspended",),
    )
    update_principal(session, s.id, status="active")
    assert ask(c.id, s.id).allowed
    delete_customer(session, c.id)
    r = ask(c.id, s.id)
    assert (r.allowed, r.reason) == (False, "the customer has been deleted")


def test_canaries_are_disclosed_like_anyone(session: Session, vault: Vault, ask: Disclose) -> None:
    plain, canary = customer(session, vault, 1), customer(session, vault, 2, is_canary=True)
    s = seller(session, 1)
    order(session, plain, s)
    order(session, canary, s)
    a, b = ask(plain.id, s.id), ask(canary.id, s.id)
    assert a.allowed and b.allowed and a.reason == b.reason and a.policy_ids == b.policy_ids
    assert json.loads(ledger_rows(session)[1].detail).keys() == {"principal", "policies", "minted"}


# -- employees and services ---------------------------------------------------------------------


def test_employee_needs_an_open_case_assigned_to_them(
    session: Session, vault: Vault, ask: Disclose
) -> None:
    c = customer(session, vault, 1)
    e1, e2 = employee(session, 1), employee(session, 2)
    no_case = ask(c.id, e1.id, purpose="support")
    assert no_case.reason == "no open support case of this customer is assigned to this employee"
    k = case(session, c, e2)
    assert not ask(c.id, e1.id, purpose="support").allowed  # someone else's case
    assert ask(c.id, e2.id, purpose="support").allowed
    assert not ask(c.id, e2.id, purpose="order").allowed
    update_case(session, k.id, status="closed")
    assert not ask(c.id, e2.id, purpose="support").allowed
    update_case(session, k.id, status="open", assignee_id=e1.id)
    assert ask(c.id, e1.id, purpose="support").allowed


def test_service_reaches_customers_for_templates_it_owns(
    session: Session, vault: Vault, ask: Disclose
) -> None:
    c = customer(session, vault, 1)
    svc = service(session, 1, templates=["order-shipped"])
    ok = ask(c.id, svc.id, purpose="notification", ref="order-shipped")
    assert ok.allowed and ok.policy_ids == ("service-owned-template",)
    denied = ask(c.id, svc.id, purpose="notification", ref="baby-registry-gift")
    assert denied.reason == "template baby-registry-gift is not owned by this service"
    with pytest.raises(InvalidInput, match="names the template"):
        ask(c.id, svc.id, purpose="notification", ref=None)
    assert not ask(c.id, svc.id, purpose="order", ref="order-shipped").allowed


# -- bad input --------------------------------------------------------------------------------


def test_unknown_ids_and_bad_requests_raise_and_store_nothing(
    session: Session, vault: Vault, ask: Disclose
) -> None:
    c, s = customer(session, vault, 1), seller(session, 1)
    order(session, c, s)
    before = snapshot(session)
    with pytest.raises(NotFound, match="no customer 999"):
        ask(999, s.id)
    with pytest.raises(NotFound, match="no principal 999"):
        ask(c.id, 999)
    with pytest.raises(InvalidInput, match="purpose"):
        ask(c.id, s.id, purpose="Not a slug!")
    with pytest.raises(InvalidInput, match="'@'"):
        ask(c.id, s.id, ref="Secret.Person1@private-mailbox.example")
    with pytest.raises(InvalidInput, match="255"):
        ask(c.id, s.id, ref="r" * 300)
    assert snapshot(session) == before
    assert ledger_rows(session) == []


def test_by_external_ids(
    session: Session,
    settings: Settings,
    vault: Vault,
    policy: PolicyEngine,
    ledger: Ledger,
) -> None:
    c, s = customer(session, vault, 1), seller(session, 7)
    order(session, c, s)
    common = {"settings": settings, "policy": policy, "ledger": ledger, "actor": "apikey:2"}
    r = disclose_external(
        session,
        customer_external_id="cust-1",
        principal_kind="seller",
        principal_external_id="seller-7",
        purpose="order",
        **common,  # type: ignore[arg-type]
    )
    assert r.allowed and (r.customer_id, r.principal_id) == (c.id, s.id)
    with pytest.raises(NotFound, match="no customer with external id 'cust-404'"):
        disclose_external(
            session,
            customer_external_id="cust-404",
            principal_kind="seller",
            principal_external_id="seller-7",
            purpose="order",
            **common,  # type: ignore[arg-type]
        )
    with pytest.raises(NotFound, match="no employee with external id 'seller-7'"):
        disclose_external(
            session,
            customer_external_id="cust-1",
            principal_kind="employee",
            principal_external_id="seller-7",
            purpose="support",
            **common,  # type: ignore[arg-type]
        )
    with pytest.raises(NotFound, match=r"external id \(value not repeated\)") as info:
        disclose_external(
            session,
            customer_external_id=f"Secret.Person1@{SECRET_DOMAIN}",
            principal_kind="seller",
            principal_external_id="seller-7",
            purpose="order",
            **common,  # type: ignore[arg-type]
        )
    assert SECRET_DOMAIN not in str(info.value)
    with pytest.raises(InvalidInput, match="principal kind"):
        disclose_external(
            session,
            customer_external_id="cust-1",
            principal_kind="robot",
            principal_external_id="seller-7",
            purpose="order",
            **common,  # type: ignore[arg-type]
        )


# -- bulk -------------------------------------------------------------------------------------


def test_bulk_matches_single_semantics_with_one_append_per_batch(
    session: Session,
    settings: Settings,
    vault: Vault,
    policy: PolicyEngine,
    ledger: Ledger,
) -> None:
    customers = [customer(session, vault, i) for i in range(6)]
    s1, s2 = seller(session, 1), seller(session, 2)
    for c in customers[:4]:
        order(session, c, s1)
    requests: list[DisclosureRequest | ExternalDisclosureRequest] = []
    for c in customers:
        requests.append(DisclosureRequest(c.id, s1.id, "order", f"o-{c.id}"))
    requests.append(DisclosureRequest(customers[0].id, s1.id, "order", "again"))  # same pair
    requests.append(DisclosureRequest(999_999, s1.id, "order"))  # unknown customer
    requests.append(DisclosureRequest(customers[0].id, s2.id, "order"))  # no order with s2
    requests.append(ExternalDisclosureRequest("cust-1", "seller", "seller-1", "order", "ext"))
    requests.append(DisclosureRequest(customers[1].id, s1.id, "BAD PURPOSE"))
    results = list(
        disclose_bulk(
            session,
            settings=settings,
            policy=policy,
            ledger=ledger,
            requests=iter(requests),
            actor="apikey:3",
            batch_size=4,
        )
    )
    assert [r.status for r in results] == [
        "allowed",
        "allowed",
        "allowed",
        "allowed",
        "denied",
        "denied",
        "allowed",
        "error",
        "denied",
        "allowed",
        "error",
    ]
    assert results[0].minted and not results[6].minted and results[6].alias == results[0].alias
    assert results[9].alias == results[1].alias  # cust-1 is customers[1]
    assert results[7].error == "not-found" and results[7].ledger_seq is None
    assert results[10].error == "invalid-input"
    seqs = [r.ledger_seq for r in results if r.ledger_seq is not None]
    assert seqs == list(range(len(seqs)))  # consecutive, in request order
    entries = ledger_rows(session)
    assert len(entries) == 9 and all(e.actor == "apikey:3" for e in entries)
    assert session.scalar(select(Alias.id).where(Alias.principal_id == s2.id)) is None


def test_bulk_uses_the_decision_memo(
    session: Session,
    settings: Settings,
    vault: Vault,
    policy: PolicyEngine,
    ledger: Ledger,
) -> None:
    rows = [
        (i + 1, {"external_id": f"m-{i}", "email": f"m{i}@{SECRET_DOMAIN}", "country": "FR"})
        for i in range(60)
    ]
    assert all(o.status == "created" for o in import_customers(session, vault, rows))
    s = seller(session, 1)
    ids = list(session.scalars(select(Customer.id).order_by(Customer.id)))
    for cid in ids:
        order(session, session.get(Customer, cid), s, days_ago=5)  # type: ignore[arg-type]
    results = list(
        disclose_bulk(
            session,
            settings=settings,
            policy=policy,
            ledger=ledger,
            actor="system",
            requests=(DisclosureRequest(cid, s.id, "order") for cid in ids),
            batch_size=25,
        )
    )
    assert all(r.allowed for r in results)
    assert policy.misses == 1 and policy.hits == 59  # 60 requests, one distinct input


def test_ledger_still_verifies_after_disclosures(
    session: Session, settings: Settings, vault: Vault, ask: Disclose, ledger: Ledger
) -> None:
    c, s = customer(session, vault, 1), seller(session, 1)
    order(session, c, s)
    for _ in range(20):
        ask(c.id, s.id)
        ask(c.id, s.id, purpose="support")
    session.flush()
    report = verify_ledger(session.connection(), settings, ledger.signer.public_key)
    assert report.ok, report.reason
    assert report.entries == 40


# -- no real address anywhere -----------------------------------------------------------------


def test_no_real_address_in_any_error_or_ledger_row(
    session: Session,
    settings: Settings,
    vault: Vault,
    policy: PolicyEngine,
    ledger: Ledger,
    ask: Disclose,
) -> None:
    messages: list[str] = []

    def attempt(fn: Callable[[], object]) -> None:
        try:
            fn()
        except MailveilError as exc:
            messages.extend([str(exc), exc.detail, repr(exc)])

    c = customer(session, vault, 1)
    s = seller(session, 1)
    e = employee(session, 1)
    svc = service(session, 1)
    order(session, c, s)
    case(session, c, e)
    attempt(lambda: customer(session, vault, 1))  # duplicate external id
    attempt(lambda: customer(session, vault, 2, country="XX"))
    attempt(lambda: ask(c.id, s.id, ref=f"Secret.Person1@{SECRET_DOMAIN}"))
    attempt(
        lambda: create_customer(
            session, vault, external_id="dup", email=f"secret.person1@{SECRET_DOMAIN}", country="FR"
        )
    )
    attempt(
        lambda: create_customer(
            session,
            vault,
            external_id="bad",
            email=f"Secret.Person3@@{SECRET_DOMAIN}",
            country="FR",
        )
    )
    attempt(lambda: get_customer_by_address(session, vault, f"Secret.Person4@{SECRET_DOMAIN}"))
    for pid, purpose, ref in [
        (s.id, "order", "o"),
        (e.id, "support", "k"),
        (svc.id, "notification", "order-shipped"),
        (svc.id, "notification", "other"),
        (s.id, "marketing", None),
    ]:
        ask(c.id, pid, purpose=purpose, ref=ref)
    results = list(
        disclose_bulk(
            session,
            settings=settings,
            policy=policy,
            ledger=ledger,
            actor="system",
            requests=[
                DisclosureRequest(c.id, s.id, "order"),
                DisclosureRequest(404, s.id, "order"),
                DisclosureRequest(c.id, s.id, f"Secret.Person1@{SECRET_DOMAIN}"),
                ExternalDisclosureRequest(
                    f"secret.person2@{SECRET_DOMAIN}", "seller", "x", "order"
                ),
            ],
        )
    )
    assert [r.status for r in results] == ["allowed", "error", "error", "error"]
    messages.extend(json.dumps(r.to_dict()) for r in results)
    assert len(messages) >= 10
    ledger_text = [
        " ".join(str(v) for v in row) for row in session.execute(select(LedgerEntry.__table__))
    ]
    assert len(ledger_text) >= 6
    haystack = "\n".join(messages + ledger_text).lower()
    for needle in (SECRET_DOMAIN, "secret.person"):
        assert needle not in haystack
