"""`mailveil detect run`, `mailveil incidents list|show|status|timeline|export|verify` (the
regulator report is `mailveil incidents report ...`, in ``incident_report``),
`mailveil canaries plant|list` and `mailveil reports submit|list|show|recheck`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mailveil.access.canaries import canaries_of, plant
from mailveil.cli.common import (
    cell,
    console,
    database,
    emit,
    fail,
    friendly_errors,
    operator_actor,
    say,
    signed_unit,
)
from mailveil.cli.ledger import publish_for_evidence
from mailveil.contacts.customers import get_customer_by_external_id
from mailveil.contacts.principals import get_principal_by_external_id
from mailveil.db.session import session_scope
from mailveil.detect.evidence import build_bundle, verify_bundle
from mailveil.detect.incidents import (
    get_incident,
    incident_view,
    list_incidents,
    set_status,
    timeline,
)
from mailveil.detect.jobs import run_detection
from mailveil.detect.report_list import get_report, list_reports, report_view
from mailveil.detect.reports import submit_report, verp_key_of
from mailveil.incidents.blast import blast_radius, culprits_of
from mailveil.incidents.containment import contain
from mailveil.incidents.notices import prepare_notices
from mailveil.ledger.append import Ledger
from mailveil.vault import Vault

detect_app = typer.Typer(help="Detection jobs.", no_args_is_help=True)
incidents_app = typer.Typer(help="Incidents and their evidence.", no_args_is_help=True)
canaries_app = typer.Typer(help="Canary customers.", no_args_is_help=True)
reports_app = typer.Typer(help="Abuse reports.", no_args_is_help=True)


def _principal(session: Any, value: str) -> int:
    kind, sep, ext = value.partition(":")
    if not sep or not kind or not ext:
        fail("--principal must be KIND:EXTERNAL_ID, e.g. employee:e-1001", code=2)
    return get_principal_by_external_id(session, kind, ext).id


@detect_app.command("run")
def run(
    ctx: typer.Context,
    anomalies: Annotated[
        bool, typer.Option("--anomalies", help="also score the last week of employee access")
    ] = False,
) -> None:
    """Scan the ledger since the last run and file signals and incidents."""
    settings = ctx.obj.settings()
    with signed_unit(settings) as (session, ledger):
        result = run_detection(session, settings, ledger, anomalies=anomalies)
    found = ", ".join(f"{n} {k}" for k, n in sorted(result.signals.items())) or "no new signals"
    say(f"[green]✓[/] scanned {result.entries_scanned} ledger entries: {found}")


@incidents_app.command("list")
def list_command(ctx: typer.Context, status: Annotated[str | None, typer.Option()] = None) -> None:
    """Incidents, oldest first, with their culprits and the 72-hour clock."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        rows = [
            incident_view(session, i) for i in list_incidents(session, status=status, limit=1000)
        ]
    table = Table("id", "status", "title", "signals", "culprits", "detected", "hours left")
    for r in rows:
        culprits = ", ".join(
            f"{c['kind']}:{c['external_id']} ({c['role']}, {c['strength'] or 'ungraded'}"
            f"{'' if c['strong'] else ', needs a 2nd person'})"
            for c in r["culprits"]
        )
        table.add_row(
            cell(r["id"]),
            cell(r["status"]),
            cell(r["title"]),
            cell(r["signal_count"]),
            cell(culprits),
            cell(r["detected_at"][:16]),
            cell(r["hours_left_to_notify"]),
        )
    console.print(table)


@incidents_app.command("show")
def show(ctx: typer.Context, incident_id: int) -> None:
    """One incident with its signals, as JSON."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        view = incident_view(session, get_incident(session, incident_id), with_signals=True)
    console.print_json(data=view)


@incidents_app.command("status")
def status(
    ctx: typer.Context,
    incident_id: int,
    new_status: Annotated[str, typer.Argument(help="confirmed, contained, closed or dismissed")],
    reason: Annotated[str, typer.Option(help="why, for the ledger")],
) -> None:
    """Move an incident on."""
    settings = ctx.obj.settings()
    with signed_unit(settings) as (session, ledger):
        row = set_status(
            session,
            ledger=ledger,
            incident_id=incident_id,
            status=new_status,
            reason=reason,
            actor=operator_actor(),
        )
        now = row.status
    say(f"[green]✓[/] incident {incident_id} is {now}")


@incidents_app.command("timeline")
def timeline_command(ctx: typer.Context, incident_id: int) -> None:
    """Every step of the incident, from the ledger, in order."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        items = timeline(session, incident_id)
    table = Table("seq", "time", "kind", "actor", "what")
    for e in items:
        what = e["detail"].get("summary") or e["detail"].get("kind") or e["detail"].get("to") or ""
        table.add_row(
            cell(e["seq"]), cell(e["time"][:19]), cell(e["kind"]), cell(e["actor"]), cell(what)
        )
    console.print(table)


@incidents_app.command("export")
def export(
    ctx: typer.Context,
    incident_id: int,
    out: Annotated[Path, typer.Option(help="where to write the evidence bundle (JSON)")],
) -> None:
    """Write the incident's evidence bundle: ledger entries, inclusion proofs, a signed
    checkpoint (cosigned by the witnesses, when configured). `mailveil incidents verify FILE`
    checks it without the database."""
    settings = ctx.obj.settings()
    publish_for_evidence(settings)
    with signed_unit(settings) as (session, ledger):
        bundle = build_bundle(session, settings, ledger, incident_id)
        out.write_text(json.dumps(bundle, indent=2) + "\n", encoding="utf-8")
    say(
        f"[green]✓[/] evidence bundle of incident {incident_id}: {len(bundle['entries'])} "
        f"ledger entries, checkpoint at size {bundle['checkpoint']['tree_size']} -> {out}"
    )


@incidents_app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="an evidence bundle (JSON)")],
    key: Annotated[
        str | None,
        typer.Option(
            help="the operator's published ledger key, to pin it: the verifier key "
            "(`mailveil ledger key`) or the base64 public key"
        ),
    ] = None,
    witness: Annotated[
        list[str] | None,
        typer.Option(help="a witness's verifier key you trust; repeat for each"),
    ] = None,
    quorum: Annotated[
        int | None, typer.Option(min=1, help="cosignatures needed (default: every --witness)")
    ] = None,
) -> None:
    """Check an evidence bundle from itself alone (no database, no settings): the checkpoint
    signature, the witnesses' cosignatures, every inclusion proof, and that each claim
    matches its ledger entries."""
    try:
        bundle = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{file}: cannot be read: {exc}", code=2)
    except json.JSONDecodeError as exc:
        fail(f"{file}: line {exc.lineno}: not JSON: {exc.msg}", code=2)
    result = verify_bundle(bundle, verifier_key=key, witnesses=witness or [], quorum=quorum)
    table = Table("check", "result", "detail")
    for what, passed, why in result.checks:
        table.add_row(cell(what), "[green]pass[/]" if passed else "[red]FAIL[/]", cell(why))
    console.print(table)
    if not result.ok:
        fail("the evidence bundle does not verify")
    for warning in result.warnings:
        say(escape(warning), err=True)
    say("[green]✓[/] the evidence bundle verifies")


@incidents_app.command("blast")
def blast(ctx: typer.Context, incident_id: int) -> None:
    """The blast radius: customers affected, by exposure, country and region."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        get_incident(session, incident_id)
        radius = blast_radius(session, culprits_of(session, incident_id), sample=0)
    table = Table("measure", "value")
    for key in ("customers", "alias_only", "real_address", "deleted_since"):
        table.add_row(key.replace("_", " "), cell(radius.to_dict()[key]))
    table.add_row("by region", cell(dict(radius.by_region)))
    table.add_row("by country", cell(dict(sorted(radius.by_country.items()))))
    console.print(table)


@incidents_app.command("contain")
def contain_command(
    ctx: typer.Context,
    incident_id: int,
    reason: Annotated[str, typer.Option(help="why, for the ledger")],
) -> None:
    """Suspend every culprit and revoke their aliases, reveals and sends.

    When a culprit was named only by statistics or weak evidence, the first operator's call
    records a request and a second, different operator's call confirms it."""
    settings = ctx.obj.settings()
    with signed_unit(settings) as (session, ledger):
        done = contain(
            session,
            ledger=ledger,
            incident_id=incident_id,
            reason=reason,
            actor=operator_actor(),
        )
    table = Table("culprit", "role", "strength", "strong", "score", "pieces of evidence")
    for c in done.culprits:
        kinds = Counter(
            f"{p['strength']} {p['basis']}{' (weak)' if p['weak'] else ''}" for p in c["pieces"]
        )
        table.add_row(
            cell(f"principal:{c['principal_id']}"),
            cell(c["role"]),
            cell(c["strength"] or "ungraded"),
            cell("yes" if c["strong"] else "no"),
            cell(c["score"]),
            cell(", ".join(f"{n} x {k}" for k, n in kinds.most_common())),
        )
    console.print(table)
    if done.status != "contained":
        say(
            f"[yellow]![/] incident {incident_id}: a culprit rests on weak evidence; "
            f"containment requested by {escape(str(done.requested_by))}, nothing done yet. "
            "Another person confirms it with the same command."
        )
        return
    say(
        f"[green]✓[/] contained: {len(done.suspended)} suspended "
        f"({len(done.already_suspended)} already were), {done.aliases_revoked} aliases and "
        f"{done.reveals_revoked} reveals revoked"
    )


@incidents_app.command("notify")
def notify_command(ctx: typer.Context, incident_id: int) -> None:
    """Prepare the breach notices (a send awaiting a second person's approval)."""
    settings = ctx.obj.settings()
    with signed_unit(settings) as (session, ledger):
        notice = prepare_notices(
            session,
            settings=settings,
            ledger=ledger,
            incident_id=incident_id,
            actor=operator_actor(),
        )
    if notice.send_id is None:
        say(f"nobody new to tell ({notice.already_told} already told)")
        return
    say(
        f"[green]✓[/] send {notice.send_id}: notices for {notice.new_customers} customers "
        f"({notice.already_told} already told, {notice.deleted} deleted since); "
        f"status {notice.status}"
    )


@canaries_app.command("plant")
def plant_command(
    ctx: typer.Context,
    principal: Annotated[str, typer.Option(help="KIND:EXTERNAL_ID")],
    country: Annotated[str, typer.Option(help="ISO country code")],
    count: Annotated[int, typer.Option(min=1, max=1000)] = 2,
) -> None:
    """Mint canary customers for a principal (their addresses live on canary_domain)."""
    settings = ctx.obj.settings()
    with friendly_errors():
        ledger = Ledger.load(settings)
        vault = Vault.open(settings)
        with database(settings) as factory, session_scope(factory) as session:
            made = plant(
                session,
                settings=settings,
                vault=vault,
                ledger=ledger,
                principal_id=_principal(session, principal),
                country=country.upper(),
                count=count,
                actor=operator_actor(),
            )
            ids = [c.external_id for c in made]
    say(f"[green]✓[/] planted {len(ids)} canaries: {', '.join(ids)}")


@canaries_app.command("list")
def canaries_list(
    ctx: typer.Context, principal: Annotated[str, typer.Option(help="KIND:EXTERNAL_ID")]
) -> None:
    """The canaries minted for a principal."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        rows = [
            (c.id, c.external_id, c.country)
            for c in canaries_of(session, _principal(session, principal))
        ]
    table = Table("customer id", "external id", "country")
    for row in rows:
        table.add_row(*(cell(x) for x in row))
    console.print(table)


@reports_app.command("submit")
def submit(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="the reported message (.eml)")],
    customer: Annotated[str, typer.Option(help="the reporting customer's external id")],
) -> None:
    """File an abuse report on a customer's behalf (as the API does for a signed-in customer)."""
    settings = ctx.obj.settings()
    if not file.is_file():
        fail(f"{file}: no such file", code=2)
    raw = file.read_bytes()
    with friendly_errors():
        ledger = Ledger.load(settings)
        vault = Vault.open(settings)
        with database(settings) as factory, session_scope(factory) as session:
            outcome = submit_report(
                session,
                settings=settings,
                ledger=ledger,
                vault=vault,
                raw=raw,
                channel="api",
                reporter_customer_id=get_customer_by_external_id(session, customer).id,
            )
    say(f"[green]✓[/] report R-{outcome.report_id}: {outcome.outcome}")


@reports_app.command("list")
def reports_list(
    ctx: typer.Context,
    outcome: Annotated[str | None, typer.Option(help="e.g. pending, complaint, unverified")] = None,
    verified: Annotated[
        bool | None, typer.Option("--verified/--unverified", help="only (un)verified reporters")
    ] = None,
    channel: Annotated[str | None, typer.Option(help="api or mailbox")] = None,
    customer: Annotated[str | None, typer.Option(help="the reporter's external id")] = None,
    after: Annotated[int | None, typer.Option(help="ids above this one (paging)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="the reports as a JSON array")] = False,
) -> None:
    """Abuse reports with their outcome and the reason for it, oldest first."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        customer_id = get_customer_by_external_id(session, customer).id if customer else None
        rows = [
            report_view(r)
            for r in list_reports(
                session,
                outcome=outcome,
                verified=verified,
                channel=channel,
                reporter_customer_id=customer_id,
                after_id=after,
                limit=limit,
            )
        ]
    if as_json:
        emit(json.dumps(rows, indent=2))
        return
    table = Table("ref", "received", "channel", "verified", "outcome", "reason")
    for r in rows:
        table.add_row(
            cell(r["reference"]),
            cell(r["received_at"][:19]),
            cell(r["channel"]),
            cell(r["verification"]),
            cell(r["outcome"]),
            cell(r["reason"]),
        )
    console.print(table)
    if len(rows) == limit:
        say(f"more: --after {rows[-1]['id']}", err=True)


@reports_app.command("show")
def reports_show(ctx: typer.Context, report_id: int) -> None:
    """One report as JSON: outcome, reason, what the relay's records say about it."""
    settings = ctx.obj.settings()
    with friendly_errors(), database(settings) as factory, session_scope(factory) as session:
        view = report_view(get_report(session, report_id))
    console.print_json(data=view)


@reports_app.command("recheck")
def reports_recheck(
    ctx: typer.Context,
    limit: Annotated[
        int | None, typer.Option(min=1, help="at most this many spooled reports")
    ] = None,
) -> None:
    """Store reports the mailbox queued while the database was busy, and check again the
    senders of reports kept pending because DNS did not answer (the resolver is the one
    `dns_nameservers` names). A pending report is judged unverified once
    `report_pending_hours` have passed. Safe to run from cron at any interval."""
    from mailveil.relay.abuse_intake import Kit, process_spool
    from mailveil.relay.sender_auth import resolver_for

    settings = ctx.obj.settings()
    with friendly_errors():
        kit = Kit(settings, Ledger.load(settings), Vault.open(settings), None)
        kit.verp_key = verp_key_of(settings)
        with database(settings) as factory:
            run = process_spool(factory, kit=kit, resolver=resolver_for(settings), limit=limit)
    summary = run.to_dict()
    summary.pop("reports")
    say("[green]✓[/] " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in summary.items()))
    if run.failed:
        fail("the database did not answer; the rest stays in the spool for the next run")


__all__ = ["canaries_app", "detect_app", "incidents_app", "reports_app"]
