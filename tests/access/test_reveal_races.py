"""Races on real, separate connections: two approvers answering at once, and one grant used
from two requests at once. Each test gets its own migrated database (SQLite file or a private
PostgreSQL schema) because the work here is committed for real."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from mailveil.access.models import RevealApproval
from mailveil.access.refusals import AccessRefused, RevealClosed, RevealUsedUp
from mailveil.access.reveals import answer_reveal, request_reveal, view_reveal
from mailveil.config import Settings
from mailveil.contacts.customers import create_customer
from mailveil.contacts.principals import create_principal
from mailveil.contacts.relationships import create_case
from mailveil.ledger.append import Ledger
from mailveil.ledger.models import LedgerEntry
from mailveil.ledger.signing import init_signing_key
from mailveil.policy import PolicyEngine
from mailveil.vault import Vault, init_keys

ADDRESS = "race.customer@example.com"


@dataclass
class Setup:
    engine: Engine
    settings: Settings
    ledger: Ledger
    vault: Vault
    request_id: int
    customer_id: int
    requester: int
    approvers: list[int]


def _setup(engine: Engine, settings: Settings, approvals: int, views: int) -> Setup:
    settings = settings.with_overrides(reveal_approvals_required=approvals, reveal_views=views)
    init_keys(settings)
    init_signing_key(settings)
    vault, ledger = Vault.open(settings), Ledger.load(settings)
    with Session(engine) as s, s.begin():
        customer = create_customer(s, vault, external_id="c-1", email=ADDRESS, country="DE")
        staff = [
            create_principal(s, kind="employee", external_id=f"e-{n}", attributes={"team": "t"})
            for n in range(3)
        ]
        create_case(s, external_id="case-1", customer_id=customer.id, assignee_id=staff[0].id)
        s.flush()
        row = request_reveal(
            s,
            settings=settings,
            policy=PolicyEngine.load(settings),
            ledger=ledger,
            employee_id=staff[0].id,
            customer_id=customer.id,
            case="case-1",
            justification="account merge needs the address on file confirmed",
        )
        ids = [p.id for p in staff]
        return Setup(engine, settings, ledger, vault, row.id, customer.id, ids[0], ids[1:])


def _race(engine: Engine, jobs: list[Callable[[Session], Any]]) -> list[Any]:
    """Run each job in its own session and thread, released together; results or errors."""
    start = threading.Barrier(len(jobs))
    out: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        start.wait()
        try:
            with Session(engine) as session, session.begin():
                out[i] = jobs[i](session)
        except BaseException as exc:  # collected and asserted on below
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def _answer(w: Setup, approver: int) -> Callable[[Session], Any]:
    def job(session: Session) -> Any:
        return answer_reveal(
            session,
            settings=w.settings,
            ledger=w.ledger,
            approver_id=approver,
            request_id=w.request_id,
            approve=True,
            customer_id=w.customer_id,
            case="case-1",
        ).status

    return job


def _count(engine: Engine, kind: str) -> int:
    with Session(engine) as s:
        return int(s.scalar(select(func.count()).where(LedgerEntry.kind == kind)) or 0)


def test_two_approvers_racing_for_one_approval_grant_once(
    own_engine: Engine, settings: Settings
) -> None:
    w = _setup(own_engine, settings, approvals=1, views=1)
    results = _race(own_engine, [_answer(w, a) for a in w.approvers])
    granted = [r for r in results if r == "granted"]
    closed = [r for r in results if isinstance(r, RevealClosed)]
    assert len(granted) == 1 and len(closed) == 1, results
    assert _count(own_engine, "reveal_granted") == 1
    with Session(own_engine) as s:
        assert s.scalar(select(func.count()).select_from(RevealApproval)) == 1


def test_two_approvers_racing_for_two_approvals_both_count(
    own_engine: Engine, settings: Settings
) -> None:
    w = _setup(own_engine, settings, approvals=2, views=1)
    results = _race(own_engine, [_answer(w, a) for a in w.approvers])
    assert sorted(results) == ["granted", "pending"], results
    assert _count(own_engine, "reveal_approved") == 2
    assert _count(own_engine, "reveal_granted") == 1


def test_one_grant_used_from_two_requests_at_once_shows_the_address_once(
    own_engine: Engine, settings: Settings
) -> None:
    w = _setup(own_engine, settings, approvals=1, views=1)
    with Session(own_engine) as s, s.begin():
        _answer(w, w.approvers[0])(s)

    def view(session: Session) -> Any:
        return view_reveal(
            session,
            ledger=w.ledger,
            vault=w.vault,
            employee_id=w.requester,
            request_id=w.request_id,
        ).address

    results = _race(own_engine, [view, view])
    shown = [r for r in results if r == ADDRESS]
    used_up = [r for r in results if isinstance(r, RevealUsedUp)]
    assert len(shown) == 1 and len(used_up) == 1, results
    assert all(isinstance(r, str | AccessRefused) for r in results)
    assert _count(own_engine, "reveal_viewed") == 1
