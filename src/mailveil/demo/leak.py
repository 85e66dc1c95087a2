"""Act one: an employee exports customers and hands the aliases to a seller's outside
address; the seller spams them; customers report it; mailveil names both, computes the blast
radius and contains it."""

from __future__ import annotations

import email
import email.policy
import email.utils
import smtplib
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select

from mailveil.access.listing import list_for_employee
from mailveil.db.session import session_scope
from mailveil.demo.harness import LOOPBACK, DemoEnv
from mailveil.demo.world import CUSTOMER_DOMAIN, Market
from mailveil.detect.evidence import build_bundle, verify_bundle
from mailveil.detect.incidents import incident_view, set_status
from mailveil.detect.jobs import run_detection
from mailveil.detect.models import AbuseReport, Incident
from mailveil.incidents.blast import BlastRadius, blast_radius, culprits_of, exposures
from mailveil.incidents.containment import Containment, contain

SPAMMER = "deals@bargains.example"
ABUSE_LOCAL = "report-abuse"


@dataclass
class LeakResult:
    exported: int = 0
    canaries_in_export: int = 0
    spam_sent: int = 0
    spam_delivered: int = 0
    spam_held_or_refused: int = 0
    reports_sent: int = 0
    reports_verified: int = 0
    signals: dict[str, int] = field(default_factory=dict)
    incident: dict[str, Any] = field(default_factory=dict)
    bundle_ok: bool = False
    bundle_entries: int = 0
    radius: BlastRadius | None = None
    containment: Containment | None = None
    after_containment: str = ""
    affected: list[int] = field(default_factory=list)
    first_alias: str = ""  # an exported alias: the spammer writes to it again after containment


def _spam(alias: str, n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Bargain Barn Deals <{SPAMMER}>"
    msg["To"] = alias
    msg["Subject"] = "Exclusive: 70% off everything this weekend"
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = f"<deal-{n}@bargains.example>"
    msg.set_content("Huge savings on our whole catalogue. Reply to claim your voucher.")
    return msg.as_bytes(policy=email.policy.SMTP)


def _send(env: DemoEnv, mail_from: str, rcpt: str, data: bytes) -> tuple[int, str]:
    """One SMTP transaction; the reply that decided it (RCPT's refusal, or DATA's)."""
    with smtplib.SMTP(LOOPBACK, env.settings.relay_port, local_hostname="mx.demo.example") as smtp:
        smtp.ehlo()
        code, text = smtp.mail(mail_from)
        if code < 300:
            code, text = smtp.rcpt(rcpt)
        if code >= 300:
            return code, text.decode(errors="replace")
        code, text = smtp.data(data)
        return code, text.decode(errors="replace")


def _held(code: int, text: str) -> bool:
    return code >= 300 or "2.7.0" in text


def _report(env: DemoEnv, reporter: str, spam: bytes) -> bytes:
    report = EmailMessage()
    report["From"] = reporter
    report["To"] = f"{ABUSE_LOCAL}@{env.settings.relay_domain}"
    report["Subject"] = "Fwd: Exclusive: 70% off everything this weekend"
    report["Date"] = email.utils.formatdate(localtime=False)
    report["Message-ID"] = email.utils.make_msgid(domain=CUSTOMER_DOMAIN)
    report.set_content("I never gave this shop my address. This is spam.")
    report.add_attachment(email.message_from_bytes(spam, policy=email.policy.default))
    return env.domains[CUSTOMER_DOMAIN].sign(report.as_bytes(policy=email.policy.SMTP))


def run_leak(
    env: DemoEnv, market: Market, *, export_rows: int | None, reporters: int
) -> LeakResult:
    """The whole act: the leak (``stage_leak``), then the investigator's response."""
    out = stage_leak(env, market, export_rows=export_rows, reporters=reporters)
    respond(env, market, out)
    return out


def stage_leak(
    env: DemoEnv, market: Market, *, export_rows: int | None, reporters: int
) -> LeakResult:
    """The insider's export, the spam, the customers' reports and the detection run: the
    world as an investigator first finds it (signals and an open incident)."""
    out = LeakResult()
    runtime = env.runtime
    insider = market.employees["e-mal"]
    with session_scope(runtime.session_factory) as session:
        export = list_for_employee(
            session,
            settings=runtime.settings,
            policy=runtime.policy,
            ledger=runtime.ledger,
            vault=runtime.vault,
            employee_id=insider.id,
            purpose="outreach",
            scope="all",
            limit=export_rows or runtime.settings.employee_export_max_rows,
            export=True,
        )
    real_ids = {c.external_id for c in market.customers}
    out.exported = len(export.rows)
    out.canaries_in_export = sum(1 for r in export.rows if r.external_id not in real_ids)
    before = env.sink.count()
    for n, row in enumerate(export.rows):
        code, _ = _send(
            env, SPAMMER, row.alias, env.domains["bargains.example"].sign(_spam(row.alias, n))
        )
        out.spam_sent += 1
        if code >= 300:
            out.spam_held_or_refused += 1
    env.relay.flush()
    delivered = env.sink.received[before:]
    out.spam_delivered = len(delivered)
    victims = [m for m in delivered if m.rcpt and m.rcpt[0].endswith("@" + CUSTOMER_DOMAIN)]
    for item in victims[:reporters]:
        code, _ = _send(
            env,
            item.rcpt[0],
            f"{ABUSE_LOCAL}@{env.settings.relay_domain}",
            _report(env, item.rcpt[0], item.data),
        )
        out.reports_sent += 1 if code < 300 else 0
    env.relay.flush()
    with session_scope(runtime.session_factory) as session:
        out.reports_verified = len(
            session.scalars(select(AbuseReport.id).where(AbuseReport.verified.is_(True))).all()
        )
        out.signals = run_detection(session, runtime.settings, runtime.ledger).signals
    out.first_alias = export.rows[0].alias if export.rows else ""
    return out


def respond(env: DemoEnv, market: Market, out: LeakResult) -> None:
    """Confirm, bundle the evidence, compute the blast radius and contain; then check that
    the spammer's next message is refused."""
    runtime = env.runtime
    insider = market.employees["e-mal"]
    with session_scope(runtime.session_factory) as session:
        incident = session.scalar(
            select(Incident).where(Incident.source_principal_id == insider.id)
        )
        if incident is None:
            return
        set_status(
            session,
            ledger=runtime.ledger,
            incident_id=incident.id,
            status="confirmed",
            reason="aliases exported by one employee were spammed by a seller",
            actor="demo:investigator",
        )
        out.incident = incident_view(session, incident)
        bundle = build_bundle(session, runtime.settings, runtime.ledger, incident.id)
        out.bundle_entries = len(bundle["entries"])
        out.bundle_ok = verify_bundle(bundle, verifier_key=runtime.ledger.signer.verifier_key).ok
        sources = culprits_of(session, incident.id)
        out.radius = blast_radius(session, sources)
        out.affected = [e.customer_id for e in exposures(session, sources) if not e.deleted]
        out.containment = contain(
            session,
            ledger=runtime.ledger,
            incident_id=incident.id,
            reason="leak confirmed by alias evidence",
            actor="demo:investigator",
        )
    alias = out.first_alias
    code, text = _send(
        env, SPAMMER, alias, env.domains["bargains.example"].sign(_spam(alias, 9999))
    )
    out.after_containment = f"{code} {text}"


__all__ = ["LeakResult", "respond", "run_leak", "stage_leak"]
