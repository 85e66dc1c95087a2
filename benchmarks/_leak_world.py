"""The marketplace world of ``leak_scenarios.py`` (a helper: ``run_all`` skips ``_*.py``).

A simulated clock (patched into the ledger and every ``utcnow``), a seeded marketplace built
through the real areas (customers, sellers, employees in teams, keys, policies), one day of
normal life (orders and their disclosures, the sellers' mail, support cases, lookups, lists,
reveals), spam to aliases as the relay records it, spam messages and customers' reports of
them in the common forwarding shapes. The injected leaks live in ``leak_scenarios.py``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

import mailveil.db.base as db_base
import mailveil.ledger.append as ledger_append
from mailveil.access.limits import enforce_limits
from mailveil.access.listing import list_for_employee
from mailveil.access.reveals import answer_reveal, request_reveal, view_reveal
from mailveil.config import Settings, load_settings
from mailveil.contacts.customers import import_customers
from mailveil.contacts.disclosures import DisclosureRequest, disclose_batch
from mailveil.contacts.models import Alias, Customer, Order, Principal, SupportCase
from mailveil.contacts.principals import create_principal
from mailveil.contacts.relationships import create_order
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine
from mailveil.detect.reports import MailboxAuth, submit_report
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.signing import init_signing_key
from mailveil.policy import PolicyEngine
from mailveil.relay import codes
from mailveil.relay.decision import stranger_event
from mailveil.relay.dkim import init_dkim_keys
from mailveil.relay.dkim_verify import DkimResult
from mailveil.relay.identity import Sender
from mailveil.relay.messages import DIRECTION_TO_CUSTOMER, init_verp_key
from mailveil.relay.routes import Route
from mailveil.relay.sender_auth import SenderAuth
from mailveil.vault import Vault, init_keys

START = date(2026, 1, 5)  # a Monday
REGIONS = {
    "EU": ["DE", "FR", "GB", "ES"],
    "NA": ["US", "CA"],
    "APAC": ["JP", "AU"],
    "LATAM": ["BR"],
}
SHIFT = {"EU": 9, "NA": 15, "APAC": 1, "LATAM": 13}  # UTC hour a shift starts


# --- the simulated clock ----------------------------------------------------------------


class Clock:
    """Simulated time for the ledger and every ``utcnow`` in mailveil (see leak_scenarios.py)."""

    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at

    def now_us(self) -> int:
        return int(self.at.timestamp() * 1_000_000)

    def set(self, day: int, hour: float = 9.0) -> datetime:
        self.at = datetime(START.year, START.month, START.day, tzinfo=UTC) + timedelta(
            days=day, hours=hour
        )
        return self.at

    def install(self) -> None:
        real = db_base.utcnow
        for name, module in list(sys.modules.items()):
            if name.startswith("mailveil") and getattr(module, "utcnow", None) is real:
                module.utcnow = self.now  # type: ignore[attr-defined]
        ledger_append.now_us = self.now_us  # type: ignore[assignment]


CLOCK = Clock()


# --- the marketplace ---------------------------------------------------------------------


@dataclass
class Leak:
    kind: str
    culprit: int  # the principal the data was disclosed to
    buyer: int | None  # the registered principal that received it (None: unknown sender)
    start: int  # first day of the leak
    end: int
    domain: str
    aliases: list[str] = field(default_factory=list)  # sold so far (alias leaks)
    customers: list[int] = field(default_factory=list)  # sold real addresses
    unsold: list[str] = field(default_factory=list)  # harvested, not yet sold
    named_day: int | None = None
    named_after_reports: int | None = None
    rank_at_20: int | None = None
    reports: int = 0


@dataclass
class World:
    seed: int
    rng: np.random.Generator
    settings: Settings
    vault: Vault
    ledger: Ledger
    policy: PolicyEngine
    engine: Any
    customers: np.ndarray[Any, Any]  # customer ids
    cust_region: np.ndarray[Any, Any]
    emails: dict[int, str]
    sellers: list[int]
    seller_w: np.ndarray[Any, Any]
    employees: list[int]
    emp_region: dict[int, str]
    emp_team: dict[int, int]
    emp_rate: dict[int, float]
    approvers: dict[int, int]  # team -> a lead of another team
    shady: int  # a registered seller that buys and sends spam
    leaks: list[Leak] = field(default_factory=list)
    case_no: int = 0
    open_cases: dict[int, list[tuple[int, str]]] = field(default_factory=dict)


def _kit(root: Path) -> tuple[Settings, Vault, Ledger, PolicyEngine, Any]:
    settings = load_settings(env={}, data_dir=root / "var", relay_domain="relay.shop.example")
    init_keys(settings)
    init_signing_key(settings)
    init_dkim_keys(settings)  # the relay's own, for the adversary's relayed mail
    init_verp_key(settings)
    engine = make_engine(url=f"sqlite:///{root / 'mailveil.db'}")
    upgrade(engine)
    return (
        settings,
        Vault.open(settings),
        Ledger.load(settings),
        PolicyEngine.load(settings),
        engine,
    )


def build_world(seed: int, root: Path, n_customers: int, n_sellers: int, n_emp: int) -> World:
    rng = np.random.default_rng(seed)
    settings, vault, ledger, policy, engine = _kit(root)
    names = list(REGIONS)
    cust_region = rng.choice(len(names), n_customers, p=[0.45, 0.3, 0.15, 0.1])
    CLOCK.set(-1)
    emails: dict[int, str] = {}
    with Session(engine) as s:
        records = []
        for i, r in enumerate(cust_region):
            countries = REGIONS[names[r]]
            email = f"user{i}.{seed}@{['mail', 'post', 'inbox', 'web'][i % 4]}.example"
            records.append(
                (
                    i + 1,
                    {
                        "external_id": f"c-{i:06d}",
                        "email": email,
                        "country": countries[i % len(countries)],
                    },
                )
            )
        ids = [o.customer_id for o in import_customers(s, vault, records, commit=False)]
        emails = {int(cid): rec[1]["email"] for cid, rec in zip(ids, records, strict=True) if cid}
        sellers = []
        for i in range(n_sellers):
            attrs = {"sending_domains": [f"shop{i}.example"]} if i % 2 == 0 else {}
            sellers.append(
                create_principal(
                    s,
                    kind="seller",
                    external_id=f"s-{i}",
                    display_name=f"Shop {i}",
                    attributes=attrs,
                ).id
            )
        shady = create_principal(
            s,
            kind="seller",
            external_id="s-bulk",
            display_name="Bulk Outlet",
            attributes={"sending_domains": [f"bulk{seed}.example"]},
        ).id
        employees, emp_region, emp_team, emp_rate, leads = [], {}, {}, {}, {}
        teams = max(2, n_emp // 10)
        team_region = [names[t % len(names)] for t in range(teams)]
        for i in range(n_emp):
            team = i % teams
            lead = i < teams
            attrs = {
                "team": f"t{team}",
                "role": "lead" if lead else "agent",
                "region": team_region[team],
                "manager": None if lead else f"e-{team}",
            }
            pid = create_principal(
                s,
                kind="employee",
                external_id=f"e-{i}",
                display_name=f"Agent {i}",
                attributes=attrs,
            ).id
            employees.append(pid)
            emp_region[pid], emp_team[pid] = team_region[team], team
            emp_rate[pid] = float(rng.lognormal(np.log(7.0), 0.35))
            if lead:
                leads[team] = pid
        s.commit()
    approvers = {t: leads[(t + 1) % teams] for t in range(teams)}
    seller_w = 1.0 / np.arange(1, n_sellers + 1) ** 0.8
    return World(
        seed,
        rng,
        settings,
        vault,
        ledger,
        policy,
        engine,
        np.array(sorted(emails)),
        cust_region,
        emails,
        sellers,
        seller_w / seller_w.sum(),
        employees,
        emp_region,
        emp_team,
        emp_rate,
        approvers,
        shady,
    )


def _region_customers(w: World, region: str, k: int) -> list[int]:
    r = list(REGIONS).index(region)
    away = w.rng.random(k) < 0.03
    pool = w.customers[w.cust_region == r]
    picks = w.rng.choice(pool, k)
    picks[away] = w.rng.choice(w.customers, int(away.sum()))
    return [int(c) for c in picks]


def _open_cases(s: Session, w: World, emp: int, customers: list[int]) -> list[tuple[int, str]]:
    rows, out = [], []
    for c in customers:
        w.case_no += 1
        ext = f"k-{w.case_no:07d}"
        rows.append(
            {
                "external_id": ext,
                "customer_id": c,
                "assignee_id": emp,
                "status": "open",
                "opened_at": CLOCK.now(),
                "updated_at": CLOCK.now(),
            }
        )
        out.append((c, ext))
    if rows:
        s.execute(insert(SupportCase), rows)
    w.open_cases.setdefault(emp, []).extend(out)
    return out


def _lookups(s: Session, w: World, emp: int, pairs: list[tuple[int, str | None]]) -> list[str]:
    """The employee's contact lookups (the disclosure ``contact_for_employee`` makes)."""
    if not pairs:
        return []
    employee = s.get(Principal, emp)
    assert employee is not None
    enforce_limits(s, w.settings, w.policy, employee, len(pairs), CLOCK.now(), purpose="support")
    results = disclose_batch(
        s,
        settings=w.settings,
        policy=w.policy,
        ledger=w.ledger,
        actor=f"principal:{emp}",
        requests=[DisclosureRequest(c, emp, "support", ref) for c, ref in pairs],
    )
    return [r.alias for r in results if r.allowed and r.alias]


def _reveal(s: Session, w: World, emp: int, customer: int, case: str) -> bool:
    req = request_reveal(
        s,
        settings=w.settings,
        policy=w.policy,
        ledger=w.ledger,
        employee_id=emp,
        customer_id=customer,
        case=case,
        justification="customer asks to confirm the address on file",
    )
    answer_reveal(
        s,
        settings=w.settings,
        ledger=w.ledger,
        approver_id=w.approvers[w.emp_team[emp]],
        request_id=req.id,
        approve=True,
        customer_id=customer,
        case=case,
        note="ok",
    )
    view_reveal(s, ledger=w.ledger, vault=w.vault, employee_id=emp, request_id=req.id)
    return True


def normal_day(s: Session, w: World, day: int) -> None:
    rng = w.rng
    weekday = day % 7 < 5
    # Orders in the morning, disclosed to their sellers; each seller writes once.
    CLOCK.set(day, 8 + rng.random())
    n = int(rng.poisson(len(w.customers) * 0.012))
    reqs = []
    for c, si in zip(
        rng.choice(w.customers, n), rng.choice(len(w.sellers), n, p=w.seller_w), strict=True
    ):
        order = create_order(
            s,
            external_id=f"o-{day}-{len(reqs)}",
            customer_id=int(c),
            seller_id=w.sellers[si],
            placed_at=CLOCK.now(),
        )
        reqs.append(DisclosureRequest(int(c), w.sellers[si], "order", order.external_id))
    results = disclose_batch(
        s, settings=w.settings, policy=w.policy, ledger=w.ledger, requests=reqs, actor="apikey:1"
    )
    CLOCK.set(day, 10 + 4 * rng.random())
    mail = [
        Event(
            "message",
            f"principal:{r.principal_id}",
            f"customer:{r.customer_id}",
            r.alias,
            DIRECTION_TO_CUSTOMER,
            "order_question",
            {
                "principal": f"principal:{r.principal_id}",
                "size": 4000,
                "sha256": "0" * 64,
                "relay_message": f"m{day}-{i}",
            },
        )
        for i, r in enumerate(results)
        if r.allowed
    ]
    w.ledger.append(s, mail)
    # Support: cases opened and looked up by their assignee in their shift.
    for emp in w.employees:
        if rng.random() > (0.92 if weekday else 0.05):
            continue
        CLOCK.set(day, SHIFT[w.emp_region[emp]] + rng.random() * 7)
        cases = _open_cases(
            s, w, emp, _region_customers(w, w.emp_region[emp], int(rng.poisson(w.emp_rate[emp])))
        )
        pairs: list[tuple[int, str | None]] = []
        for c, ext in cases:
            for _ in range(1 + int(rng.poisson(0.4))):
                pairs.append((c, ext if rng.random() < 0.9 else None))
        _lookups(s, w, emp, pairs)
        if rng.random() < 0.12:
            list_for_employee(
                s,
                settings=w.settings,
                policy=w.policy,
                ledger=w.ledger,
                vault=w.vault,
                employee_id=emp,
                limit=100,
            )
        if w.emp_region[emp] and rng.random() < 0.02 and cases:
            c, ext = cases[0]
            _reveal(s, w, emp, c, ext)
    # Cases closed after three days (the backend's sync).
    s.execute(
        update(SupportCase)
        .where(
            SupportCase.status == "open",
            SupportCase.opened_at < CLOCK.set(day, 0) - timedelta(days=3),
        )
        .values(status="closed", closed_at=CLOCK.now())
    )


# --- spam, strangers and reports ------------------------------------------------------------


def _ctx(w: World) -> Any:
    return SimpleNamespace(
        runtime=SimpleNamespace(vault=w.vault, settings=w.settings), settings=w.settings
    )


def route_of(s: Session, a: Alias) -> Route:
    """The relay's view of an alias (``relay.routes``), from the rows the benchmark has."""
    status, placed = s.execute(
        select(Order.status, Order.placed_at)
        .where(Order.customer_id == a.customer_id, Order.seller_id == a.principal_id)
        .order_by(Order.placed_at.desc())
        .limit(1)
    ).first() or (None, None)
    return Route(
        DIRECTION_TO_CUSTOMER,
        a.address,
        a.reverse_address,
        a.revoked_at is not None,
        s.get(Customer, a.customer_id),  # type: ignore[arg-type]
        s.get(Principal, a.principal_id),  # type: ignore[arg-type]
        status,
        placed,
        False,
    )


def strangers(s: Session, w: World, aliases: list[str], domain: str) -> None:
    """Spam to aliases from ``domain``: the entries the relay writes when quarantining it.
    The buyer signs with its own domain and passes SPF, aligned, as a bulk mailer does."""
    if not aliases:
        return
    rows = s.execute(select(Alias).where(Alias.address.in_(aliases))).scalars().all()
    sender = Sender(mail_from=f"offers@{domain}", client_ip="198.51.100.23", helo=f"mx.{domain}")
    auth = SenderAuth(
        spf="pass",
        spf_domain=domain,
        dkim=[DkimResult(domain, "s1", "pass", "rcpt")],
        from_domain=domain,
        dmarc_policy=None,
        aligned=True,
        dmarc_result="none",
        spf_aligned=True,
        dkim_aligned_domains=(domain,),
        rcpt_checked=True,
        dkim_rcpt_domains=(domain,),
    )
    events = []
    for a in rows:
        route = route_of(s, a)
        extra = {"action": "quarantine", "sha256": "0" * 64, "size": 5000}
        events.append(
            stranger_event(
                s,
                _ctx(w),
                route,
                sender,
                codes.QUARANTINED,
                header_from=f"offers@{domain}",
                auth=auth,
                extra=extra,
            )
        )
    w.ledger.append(s, events)


def spam_message(to: str, sender: str, name: str, day: int, n: int) -> EmailMessage:
    domain = sender.split("@")[1]
    msg = EmailMessage()
    msg["Received"] = f"from mx.{domain} ([203.0.113.{n % 250}]) by mx.mail.example; {_date(day)}"
    msg["Authentication-Results"] = (
        f"mx.mail.example; spf=pass smtp.mailfrom={domain}; dkim=pass header.d={domain}"
    )
    msg["DKIM-Signature"] = f"v=1; a=rsa-sha256; d={domain}; s=s1; h=from; bh=a; b=b"
    msg["From"] = f"{name} <{sender}>"
    msg["To"] = to
    msg["Subject"] = "Exclusive catalogue offers for you"
    msg["Date"] = _date(day)
    msg["Message-ID"] = f"<{n}.{day}@{domain}>"
    msg.set_content("Our new catalogue is out. Order today and save 70 %!\n")
    return msg


def _date(day: int) -> str:
    d = datetime(START.year, START.month, START.day, 10, 0, tzinfo=UTC) + timedelta(days=day)
    return d.strftime("%a, %d %b %Y %H:%M:%S +0000")


SHAPES = ("rfc822", "gmail", "outlook", "apple")


def forwarded(shape: str, spam: EmailMessage, reporter: str) -> bytes:
    """A customer's report of ``spam`` in one of the common shapes."""
    report = EmailMessage()
    report["From"] = reporter
    report["To"] = "report-abuse@relay.shop.example"
    report["Subject"] = f"Fwd: {spam['Subject']}"
    head = {k: str(spam[k]) for k in ("From", "To", "Subject", "Date")}
    body = "Our new catalogue is out. Order today and save 70 %!\n"
    if shape == "rfc822":
        report.set_content("This is spam, please stop it.\n")
        report.add_attachment(spam)
    elif shape == "gmail":
        report.set_content(
            "spam again\n\n---------- Forwarded message ---------\n"
            f"From: {head['From']}\nDate: {head['Date']}\nSubject: {head['Subject']}\n"
            f"To: <{head['To']}>\n\n\n{body}"
        )
    elif shape == "outlook":
        report.set_content(
            "Please look into this.\n\n________________________________\n"
            f"From: {head['From']}\nSent: {head['Date']}\nTo: {head['To']}\n"
            f"Subject: {head['Subject']}\n\n{body}"
        )
    else:
        report.set_content(
            f"Begin forwarded message:\n\nFrom: {head['From']}\nSubject: {head['Subject']}\n"
            f"Date: {head['Date']}\nTo: {head['To']}\n\n{body}"
        )
    return report.as_bytes()


def report(s: Session, w: World, customer: int, spam: EmailMessage, n: int) -> Any:
    shape = SHAPES[n % len(SHAPES)]
    raw = forwarded(shape, spam, w.emails[customer])
    common = dict(settings=w.settings, ledger=w.ledger, vault=w.vault, raw=raw)
    if n % 3 == 2:
        return submit_report(
            s,
            channel="mailbox",
            mailbox=MailboxAuth(header_from=w.emails[customer], dmarc_pass=True),
            **common,
        )  # type: ignore[arg-type]
    return submit_report(s, channel="api", reporter_customer_id=customer, **common)  # type: ignore[arg-type]
