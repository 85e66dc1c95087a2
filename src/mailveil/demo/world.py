"""The demo marketplace: customers, sellers with orders, support staff with cases, the
marketing-operations employee whose role the operator's policy lets export customers for
outreach (the gap the insider uses), and an approver."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from mailveil.auth.keys import Role, issue_key
from mailveil.contacts.customers import create_customer
from mailveil.contacts.disclosures import DisclosureRequest, disclose_batch
from mailveil.contacts.models import Customer, Principal
from mailveil.contacts.principals import create_principal
from mailveil.contacts.relationships import create_case, create_order
from mailveil.runtime import Runtime

CUSTOMER_DOMAIN = "mail.example"
FIRST = ["ana", "ben", "cleo", "dev", "elif", "finn", "gia", "hugo", "ines", "jan", "kai", "lea"]
LAST = ["meyer", "dubois", "rossi", "smith", "novak", "garcia", "jansen", "silva", "berg"]
COUNTRIES = ["DE", "DE", "DE", "FR", "FR", "IT", "NL", "ES", "US", "GB"]

# The operator's policy for the demo: the shipped employee rules, plus marketing operations
# allowed to reach any customer for "outreach" and to export up to 5,000 a day. Realistic,
# and exactly the kind of broad grant an insider abuses.
DEMO_EMPLOYEES_CEDAR = """
@id("employee-assigned-case")
@reason("an open support case of this customer is assigned to this employee")
@deny_reason("no open support case of this customer is assigned to this employee")
permit (principal is Mailveil::Employee, action == Mailveil::Action::"disclose",
        resource is Mailveil::Customer)
when { context has open_case && context.open_case };

@id("marketing-ops-outreach")
@reason("marketing operations may reach customers for outreach")
permit (principal is Mailveil::Employee, action == Mailveil::Action::"disclose",
        resource is Mailveil::Customer)
when { principal.role == "marketing_ops" && context.purpose == "outreach" };

@id("employee-purpose")
@reason("employees are given aliases for support (marketing operations also for outreach)")
forbid (principal is Mailveil::Employee, action == Mailveil::Action::"disclose", resource)
unless {
  context.purpose == "support" ||
  (principal.role == "marketing_ops" && context.purpose == "outreach")
};

@id("employee-list-within-limits")
@reason("the rows fit within this employee's hourly and daily limits")
@deny_reason("over the limit of {hour_limit} customers per hour or {day_limit} per day")
permit (principal is Mailveil::Employee, action == Mailveil::Action::"list", resource)
when {
  context.used_hour + context.requested <= context.hour_limit &&
  context.used_day + context.requested <= context.day_limit
};

@id("marketing-ops-bigger-lists")
@reason("marketing operations may list up to 5,000 customers a day")
permit (principal is Mailveil::Employee, action == Mailveil::Action::"list", resource)
when { principal.role == "marketing_ops" && context.used_day + context.requested <= 5000 };

@id("employee-reveal-own-open-case")
@reason("the employee asks about an open case of this customer assigned to them")
@deny_reason("a reveal needs an open case of this customer assigned to the requesting employee")
permit (principal is Mailveil::Employee, action == Mailveil::Action::"request_reveal",
        resource is Mailveil::Customer)
when { context.case_open && context.case_assigned };
"""


@dataclass
class Market:
    customers: list[Customer] = field(default_factory=list)
    addresses: dict[int, str] = field(default_factory=dict)  # customer id -> real address
    sellers: dict[str, Principal] = field(default_factory=dict)
    employees: dict[str, Principal] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


def build_market(session: Session, runtime: Runtime, *, customers: int, seed: int = 7) -> Market:
    rng = random.Random(seed)
    settings, vault = runtime.settings, runtime.vault
    market = Market()
    for n in range(customers):
        address = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{n}@{CUSTOMER_DOMAIN}"
        row = create_customer(
            session,
            vault,
            external_id=f"cust-{100000 + n * 7}",
            email=address,
            country=rng.choice(COUNTRIES),
        )
        market.customers.append(row)
        market.addresses[row.id] = address
    for ext, name, domain in (
        ("s-cosy", "Cosy Home", "cosyhome.example"),
        ("s-kids", "Little Steps Kids", "littlesteps.example"),
        ("s-barn", "Bargain Barn", "bargains.example"),
    ):
        market.sellers[ext] = create_principal(
            session,
            kind="seller",
            external_id=ext,
            display_name=name,
            attributes={"sending_domains": [domain], "sending_addresses": [f"orders@{domain}"]},
        )
    for ext, name, attrs in (
        ("e-sam", "Sam Ortiz", {"team": "customer support", "role": "agent", "region": "EU"}),
        ("e-ria", "Ria Patel", {"team": "customer support", "role": "agent", "region": "EU"}),
        (
            "e-mal",
            "Mal Lory",
            {"team": "marketing operations", "role": "marketing_ops", "region": "EU"},
        ),
        ("e-ava", "Ava Chen", {"team": "trust and safety", "role": "lead", "region": "EU"}),
    ):
        market.employees[ext] = create_principal(
            session, kind="employee", external_id=ext, display_name=name, attributes=attrs
        )
    session.flush()
    requests = []
    for c in market.customers:
        for seller in rng.sample(list(market.sellers.values()), 1 + (c.id % 2)):
            create_order(
                session, external_id=f"o-{c.id}-{seller.id}", customer_id=c.id, seller_id=seller.id
            )
            requests.append(DisclosureRequest(c.id, seller.id, "order", f"o-{c.id}-{seller.id}"))
    agents = [market.employees["e-sam"], market.employees["e-ria"]]
    for c in rng.sample(market.customers, max(1, customers // 10)):
        agent = rng.choice(agents)
        create_case(session, external_id=f"case-{c.id}", customer_id=c.id, assignee_id=agent.id)
        requests.append(DisclosureRequest(c.id, agent.id, "support", f"case-{c.id}"))
    session.flush()
    results = disclose_batch(
        session,
        settings=settings,
        policy=runtime.policy,
        ledger=runtime.ledger,
        requests=requests,
        actor="marketplace-backend",
    )
    assert all(r.allowed for r in results), [r.reason for r in results if not r.allowed][:3]
    market.keys["ava"] = issue_key(
        session, Role.APPROVER, principal_id=market.employees["e-ava"].id, label="demo approver"
    ).token
    session.commit()
    return market


__all__ = ["CUSTOMER_DOMAIN", "DEMO_EMPLOYEES_CEDAR", "Market", "build_market"]
