"""Employee access from the command line: suspend and reinstate principals, work reveal
requests, read a customer's access log, and act as an employee (`--as employee:ID`) for a
contact lookup or an export -- the same functions, rules and ledger entries as the API."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.access.access_log import access_log
from mailveil.access.contact import contact_for_employee
from mailveil.access.listing import list_for_employee
from mailveil.access.refusals import AccessRefused, NotAnApprover, record_refusal
from mailveil.access.reveals import (
    answer_reveal,
    expire_reveals,
    list_reveals,
    request_reveal,
    reveal_view,
    view_reveal,
)
from mailveil.access.suspension import reinstate_principal, suspend_principal
from mailveil.auth.keys import Role
from mailveil.auth.models import ApiKey
from mailveil.cli.common import (
    cell,
    console,
    emit,
    fail,
    operator_actor,
    say,
    signed_unit,
)
from mailveil.config import Settings
from mailveil.contacts.customers import get_customer_by_external_id
from mailveil.contacts.principals import get_principal_by_external_id
from mailveil.csvout import SafeCsvWriter
from mailveil.ledger.append import Ledger
from mailveil.policy import PolicyEngine
from mailveil.vault import Vault

principals_app = typer.Typer(help="Principals: suspend and reinstate.", no_args_is_help=True)
reveals_app = typer.Typer(help="Break-glass reveals.", no_args_is_help=True)
T = TypeVar("T")

AsOption = Annotated[str, typer.Option("--as", help="act as this employee: employee:EXTERNAL_ID")]


def _split(value: str, option: str) -> tuple[str, str]:
    kind, sep, ext = value.partition(":")
    if not sep or not kind or not ext:
        fail(f"{option} must be KIND:EXTERNAL_ID, e.g. employee:e-1001", code=2)
    return kind, ext


@contextmanager
def _unit(settings: Settings) -> Iterator[tuple[Session, Ledger]]:
    """One committed unit of work; a refusal is written to the ledger before it is shown."""
    with signed_unit(settings) as (session, ledger):
        try:
            yield session, ledger
        except AccessRefused as exc:
            seq = record_refusal(session, ledger, exc)
            exc.detail = f"{exc.detail} [refusal recorded as ledger entry {seq}]"
            raise


def _employee_id(session: Session, who: str) -> int:
    kind, ext = _split(who, "--as")
    if kind != "employee":
        fail("--as must name an employee", code=2)
    return get_principal_by_external_id(session, "employee", ext).id


def _run(ctx: typer.Context, work: Callable[[Session, Ledger, Settings], T]) -> T:
    settings = ctx.obj.settings()
    with _unit(settings) as (session, ledger):
        return work(session, ledger, settings)


@principals_app.command("suspend")
def suspend(
    ctx: typer.Context,
    principal: Annotated[str, typer.Argument(help="KIND:EXTERNAL_ID")],
    reason: Annotated[str, typer.Option(help="why, for the ledger")],
) -> None:
    """Suspend: revoke every alias disclosed to the principal and its open reveals."""
    kind, ext = _split(principal, "PRINCIPAL")

    def work(session: Session, ledger: Ledger, settings: Settings) -> Any:
        pid = get_principal_by_external_id(session, kind, ext).id
        return suspend_principal(
            session,
            ledger=ledger,
            principal_id=pid,
            reason=reason,
            actor=operator_actor(),
        )

    done = _run(ctx, work)
    say(
        f"[green]✓[/] suspended; {done.aliases_revoked} alias(es) and {done.reveals_revoked} "
        f"reveal(s) revoked (ledger entry {done.ledger_seq})"
    )


@principals_app.command("reinstate")
def reinstate(
    ctx: typer.Context,
    principal: Annotated[str, typer.Argument(help="KIND:EXTERNAL_ID")],
    reason: Annotated[str, typer.Option(help="why, for the ledger")],
) -> None:
    """Active again; revoked aliases stay revoked."""
    kind, ext = _split(principal, "PRINCIPAL")

    def work(session: Session, ledger: Ledger, settings: Settings) -> int:
        pid = get_principal_by_external_id(session, kind, ext).id
        return reinstate_principal(
            session,
            ledger=ledger,
            principal_id=pid,
            reason=reason,
            actor=operator_actor(),
        )

    say(f"[green]✓[/] reinstated (ledger entry {_run(ctx, work)})")


@reveals_app.command("list")
def list_command(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="pending, granted, ...")] = None,
) -> None:
    """Reveal requests, oldest first."""

    def work(session: Session, _ledger: Ledger, _settings: Settings) -> list[Any]:
        return [reveal_view(session, r) for r in list_reveals(session, status=status, limit=1000)]

    rows = _run(ctx, work)
    table = Table(
        "id", "status", "requester", "customer", "case", "approvals", "views", "justification"
    )
    for r in rows:
        table.add_row(
            cell(r["id"]),
            cell(r["status"]),
            cell(r["requester_id"]),
            cell(r["customer_id"]),
            cell(r["case"]),
            cell(f"{r['approvals']}/{r['approvals_required']}"),
            cell(f"{r['views_used']}/{r['views_allowed']}"),
            cell(r["justification"]),
        )
    console.print(table)


@reveals_app.command("request")
def request_command(
    ctx: typer.Context,
    as_: AsOption,
    customer: Annotated[str, typer.Option(help="customer external id")],
    case: Annotated[str, typer.Option(help="the support case's external id")],
    justification: Annotated[str, typer.Option(help="why, in at least 20 characters")],
) -> None:
    """Ask to see a customer's real address for an open case assigned to the employee."""

    def work(session: Session, ledger: Ledger, settings: Settings) -> int:
        row = request_reveal(
            session,
            settings=settings,
            policy=PolicyEngine.load(settings),
            ledger=ledger,
            employee_id=_employee_id(session, as_),
            customer_id=get_customer_by_external_id(session, customer).id,
            case=case,
            justification=justification,
        )
        return row.id

    say(f"[green]✓[/] reveal request {_run(ctx, work)} is pending approval")


def _answer(
    ctx: typer.Context,
    request_id: int,
    as_: str,
    customer: str,
    case: str,
    approve: bool,
    note: str,
) -> None:
    def work(session: Session, ledger: Ledger, settings: Settings) -> str:
        approver = _employee_id(session, as_)
        holds_role = session.scalar(
            select(ApiKey.id).where(
                ApiKey.principal_id == approver,
                ApiKey.role == Role.APPROVER.value,
                ApiKey.revoked_at.is_(None),
            )
        )
        if holds_role is None:
            raise NotAnApprover(
                "this employee holds no approver key",
                actor=f"principal:{approver}",
                facts={"request": request_id},
            )
        return answer_reveal(
            session,
            settings=settings,
            ledger=ledger,
            approver_id=approver,
            request_id=request_id,
            approve=approve,
            customer_id=get_customer_by_external_id(session, customer).id,
            case=case,
            note=note,
        ).status

    say(f"[green]✓[/] reveal request {request_id} is now {_run(ctx, work)}")


@reveals_app.command("approve")
def approve(
    ctx: typer.Context,
    request_id: int,
    as_: AsOption,
    customer: Annotated[str, typer.Option(help="the request's customer (external id)")],
    case: Annotated[str, typer.Option(help="the request's case (external id)")],
    note: Annotated[str, typer.Option()] = "",
) -> None:
    """Approve as an approver (never your own request or your reporting line's)."""
    _answer(ctx, request_id, as_, customer, case, True, note)


@reveals_app.command("deny")
def deny(
    ctx: typer.Context,
    request_id: int,
    as_: AsOption,
    customer: Annotated[str, typer.Option(help="the request's customer (external id)")],
    case: Annotated[str, typer.Option(help="the request's case (external id)")],
    note: Annotated[str, typer.Option()] = "",
) -> None:
    """Deny; one denial closes the request."""
    _answer(ctx, request_id, as_, customer, case, False, note)


@reveals_app.command("view")
def view(ctx: typer.Context, request_id: int, as_: AsOption) -> None:
    """Use one view of a granted reveal: prints the real address (ledgered)."""

    def work(session: Session, ledger: Ledger, settings: Settings) -> Any:
        return view_reveal(
            session,
            ledger=ledger,
            vault=Vault.open(settings),
            employee_id=_employee_id(session, as_),
            request_id=request_id,
        )

    shown = _run(ctx, work)
    emit(shown.address)
    say(
        f"{shown.views_left} view(s) left; "
        f"the grant expires {shown.grant_expires_at:%Y-%m-%d %H:%M} UTC",
        err=True,
    )


@reveals_app.command("expire")
def expire(ctx: typer.Context) -> None:
    """Mark lapsed requests and grants expired (the server does this every minute)."""

    def work(session: Session, ledger: Ledger, settings: Settings) -> int:
        return expire_reveals(session, ledger=ledger)

    say(f"[green]✓[/] {_run(ctx, work)} reveal request(s) expired")


def access_log_command(
    ctx: typer.Context,
    customer: Annotated[str, typer.Argument(help="customer external id")],
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """Who saw this customer's alias or real address, when, and for what (as the customer
    would see it on their account page)."""

    def work(session: Session, _ledger: Ledger, settings: Settings) -> list[Any]:
        cid = get_customer_by_external_id(session, customer).id
        return access_log(session, settings, cid, limit=limit)[0]

    table = Table("when", "what", "by", "kind", "purpose", "case / order")
    for e in _run(ctx, work):
        table.add_row(
            cell(e.time), cell(e.what), cell(e.by), cell(e.by_kind), cell(e.purpose), cell(e.ref)
        )
    console.print(table)


def contact_command(
    ctx: typer.Context,
    customer: Annotated[str, typer.Argument(help="customer external id")],
    as_: AsOption,
    purpose: Annotated[str, typer.Option()] = "support",
    ref: Annotated[str | None, typer.Option(help="the case")] = None,
) -> None:
    """The employee's alias for a customer, if policy allows (exit 1 with the reason if not)."""

    def work(session: Session, ledger: Ledger, settings: Settings) -> Any:
        return contact_for_employee(
            session,
            settings=settings,
            policy=PolicyEngine.load(settings),
            ledger=ledger,
            employee_id=_employee_id(session, as_),
            customer_external_id=customer,
            purpose=purpose,
            ref=ref,
        )

    result = _run(ctx, work)
    if not result.allowed:
        fail(f"denied: {result.reason} (ledger entry {result.ledger_seq})")
    say(f"alias         {result.alias}", markup=False)
    say(f"reverse alias {result.reverse_alias}", markup=False)


def export_command(
    ctx: typer.Context,
    as_: AsOption,
    out: Annotated[Path | None, typer.Option(help="CSV file (default: standard output)")] = None,
    purpose: Annotated[str, typer.Option()] = "support",
    scope: Annotated[str, typer.Option(help="assigned or all")] = "assigned",
    country: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Export the employee's aliases as CSV (the same rows, limits and canaries as the API)."""

    def work(session: Session, ledger: Ledger, settings: Settings) -> Any:
        return list_for_employee(
            session,
            settings=settings,
            policy=PolicyEngine.load(settings),
            ledger=ledger,
            vault=Vault.open(settings),
            employee_id=_employee_id(session, as_),
            purpose=purpose,
            scope=scope,
            country=country,
            limit=limit or settings.employee_export_max_rows,
            export=True,
        )

    page = _run(ctx, work)
    handle = out.open("w", newline="", encoding="utf-8") if out else sys.stdout
    try:
        writer = SafeCsvWriter(handle, lineterminator="\r\n" if out else "\n")
        writer.writerow(("external_id", "country", "alias", "reverse_alias"))
        writer.writerows((r.external_id, r.country, r.alias, r.reverse_alias) for r in page.rows)
    finally:
        if out:
            handle.close()
    if out:
        say(f"[green]✓[/] {len(page.rows)} row(s) written to {out}", err=True)


__all__ = [
    "access_log_command",
    "contact_command",
    "export_command",
    "principals_app",
    "reveals_app",
]
