"""The demo's script and its report: each act runs through the real code paths and prints
what happened, with numbers, in a few Rich panels and tables."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from mailveil.db.session import session_scope
from mailveil.demo.harness import DemoEnv
from mailveil.demo.leak import LeakResult, run_leak
from mailveil.demo.notify_acts import GlitchResult, NoticeResult, run_glitch, run_notices
from mailveil.demo.world import CUSTOMER_DOMAIN, DEMO_EMPLOYEES_CEDAR, build_market
from mailveil.incidents.controller import set_controller
from mailveil.incidents.regulator import regulator_report, render_html

# The demo marketplace's privacy officer fills these in before the first report.
DEMO_CONTROLLER = {
    "name": "Demo Marketplace Ltd",
    "address": "1 Harbour Square\nDublin 2\nIreland",
    "establishment_country": "IE",
    "dpo_name": "Data Protection Officer",
    "dpo_email": "dpo@demo-market.example",
}
OUTSIDE_DOMAINS = [CUSTOMER_DOMAIN, "bargains.example", "cosyhome.example", "littlesteps.example"]


@dataclass
class DemoReport:
    seconds: float = 0.0
    leak: LeakResult | None = None
    notices: NoticeResult | None = None
    glitch: GlitchResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for k, v in rows:
        table.add_row(k, str(v))
    return table


def run_demo(
    console: Console,
    *,
    customers: int = 400,
    export_rows: int | None = None,
    reporters: int = 12,
    out_dir: Path | None = None,
) -> DemoReport:
    started = time.monotonic()
    report = DemoReport()
    # The send worker retries a step that meets a busy database (the relay writes to the
    # same SQLite file); those retries are routine here and would only clutter the story.
    notify_log = logging.getLogger("mailveil.notify")
    level_before = notify_log.level
    notify_log.setLevel(logging.CRITICAL)
    console.print(Panel.fit("mailveil demo: the two incidents, replayed", style="bold"))
    env = DemoEnv.start(
        OUTSIDE_DOMAINS,
        policy_files={"employees.cedar": DEMO_EMPLOYEES_CEDAR},
        notify_soak_seconds=0.0,
        notify_min_stage_size=200,
        **_stranger_banner(),
    )
    try:
        with (
            console.status("Building the marketplace…"),
            env.runtime.session_factory() as session,
        ):
            market = build_market(session, env.runtime, customers=customers)
        console.print(
            f"[green]✓[/] marketplace: {len(market.customers)} customers, "
            f"{len(market.sellers)} sellers, {len(market.employees)} employees; every seller and "
            "agent holds aliases only, each disclosure in the ledger"
        )
        console.rule("Incident 1 — an employee sells customers' contacts to a seller")
        with console.status("The insider exports, the seller spams, customers report…"):
            leak = run_leak(env, market, export_rows=export_rows, reporters=reporters)
        report.leak = leak
        _print_leak(console, leak, market)
        report.failures.extend(_check_leak(leak, market))
        if leak.incident:
            reg = _regulator_report(env, leak.incident["id"], out_dir)
            report.extra["regulator_report"] = reg["file"]
            if reg["draft"]:
                report.failures.append("the regulator report is still a draft: " + reg["why"])
            console.print(
                _table("Regulator report (GDPR Art. 33 and the rules like it)", reg["rows"])
            )
        if leak.incident:
            with console.status("Sending the breach notices through the guarded send path…"):
                notices = run_notices(env, market, leak.incident["id"], leak.affected)
            report.notices = notices
            _print_notices(console, notices)
            report.failures.extend(_check_notices(notices))
        console.rule("Incident 2 — a 'gift from your registry' mail aimed at every customer")
        with console.status("The registry job sends to everyone…"):
            glitch = run_glitch(env, market)
        report.glitch = glitch
        _print_glitch(console, glitch)
        report.failures.extend(_check_glitch(glitch))
    finally:
        env.stop()
        notify_log.setLevel(level_before)  # the demo may run inside a longer-lived process
    report.seconds = time.monotonic() - started
    for problem in report.failures:
        console.print(f"[bold red]✗ {problem}[/]")
    style = "bold green" if report.ok else "bold red"
    console.print(Panel.fit(f"Done in {report.seconds:.1f} s", style=style))
    return report


def _regulator_report(env: DemoEnv, incident_id: int, out_dir: Path | None) -> dict[str, Any]:
    """The privacy officer fills in the controller's details, and the report is written
    (as HTML; as PDF too when the demo keeps its reports)."""
    with session_scope(env.runtime.session_factory) as session:
        set_controller(
            session,
            settings=env.settings,
            ledger=env.runtime.ledger,
            changes=DEMO_CONTROLLER,
            actor="demo:privacy-officer",
        )
        reg = regulator_report(session, env.settings, incident_id, ledger=env.runtime.ledger)
    target = (out_dir or env.workdir) / f"regulator-report-{incident_id}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(reg), encoding="utf-8")
    if out_dir is not None:
        from mailveil.incidents.report_pdf import render_pdf

        target.with_suffix(".pdf").write_bytes(render_pdf(reg))
    members = ", ".join(f"{m['name']} {m['people']}" for m in reg["people"]["by_member_state"])
    clock = reg["clock"]
    return {
        "draft": reg["draft"],
        "why": "; ".join(reg["draft_reasons"]),
        "file": str(target) if out_dir else "(temporary)",
        "rows": [
            ("people affected (exact)", reg["people"]["count_text"]),
            ("per member state", members or "none"),
            ("we became aware", reg["timing"]["awareness"]["at_text"]),
            ("next deadline", f"{clock['recipient']}: {clock['due_text']}" if clock else "none"),
            ("recipients to decide on", len(reg["deadlines"])),
            ("severity (ENISA)", f"{reg['severity']['level']}, {reg['severity']['formula']}"),
            ("measures taken", len(reg["measures_taken"])),
        ],
    }


def _check_leak(leak: LeakResult, market: Any) -> list[str]:
    """What the story must show; a demo that does not is a failure (make demo exits 1)."""
    problems = []
    named = {(c["external_id"], c["role"]) for c in leak.incident.get("culprits", [])}
    if named != {("e-mal", "source"), ("s-barn", "recipient")}:
        problems.append(f"the incident named {sorted(named)}, not the employee and the seller")
    if not leak.bundle_ok:
        problems.append("the evidence bundle did not verify")
    real = leak.exported - leak.canaries_in_export
    if leak.radius is None or leak.radius.customers < real:
        problems.append("the blast radius misses customers the insider exported")
    if leak.reports_verified < leak.reports_sent:
        problems.append("a customer's report was not verified as theirs")
    if not leak.after_containment or leak.after_containment.startswith("250 2.0.0"):
        problems.append("mail to a contained alias was still delivered")
    return problems


def _stranger_banner() -> dict[str, Any]:
    # Customers must receive the spam (with a warning) to be able to report it.
    from dataclasses import fields

    from mailveil.config import Settings

    names = {f.name for f in fields(Settings)}
    return {"relay_stranger_action": "banner"} if "relay_stranger_action" in names else {}


def _print_leak(console: Console, leak: LeakResult, market: Any) -> None:
    console.print(
        _table(
            "What happened",
            [
                ("insider export (rows)", leak.exported),
                ("  of which canaries", leak.canaries_in_export),
                ("spam sent to the exported aliases", leak.spam_sent),
                ("  delivered with a warning banner", leak.spam_delivered),
                ("  held or refused", leak.spam_held_or_refused),
                ("reports to the abuse mailbox", leak.reports_sent),
                ("  verified as the customer's own", leak.reports_verified),
            ],
        )
    )
    signals = ", ".join(f"{n} {k}" for k, n in sorted(leak.signals.items())) or "none"
    console.print(f"[bold]Signals filed:[/] {signals}")
    if not leak.incident:
        console.print("[red]no incident was opened[/]")
        return
    culprits = Table(
        title=f"Incident {leak.incident['id']}: {leak.incident['title']}", title_justify="left"
    )
    for col in ("culprit", "kind", "role", "evidence items"):
        culprits.add_column(col)
    for c in leak.incident["culprits"]:
        culprits.add_row(c["name"] or c["external_id"], c["kind"], c["role"], str(c["evidence"]))
    console.print(culprits)
    console.print(
        f"[green]✓[/] evidence bundle: {leak.bundle_entries} ledger entries with inclusion proofs "
        f"and a signed checkpoint; verifies without the database: "
        f"{'[green]yes[/]' if leak.bundle_ok else '[red]NO[/]'}"
    )
    if leak.radius is not None:
        r = leak.radius
        console.print(
            _table(
                "Blast radius (from the ledger's tables; canaries left out)",
                [
                    ("customers affected", r.customers),
                    ("  alias only", r.alias_only),
                    ("  real address", r.real_address),
                    ("by country", dict(sorted(r.by_country.items()))),
                ],
            )
        )
    if leak.containment is not None:
        c = leak.containment
        console.print(
            f"[green]✓[/] contained: {len(c.suspended)} principals suspended, "
            f"{c.aliases_revoked} aliases revoked; the spammer's next message gets "
            f"[bold]{leak.after_containment}[/]"
        )


def _print_notices(console: Console, n: NoticeResult) -> None:
    console.print(
        _table(
            "Breach notices (lint-checked template, evidence: incident membership)",
            [
                ("affected customers", n.affected),
                ("notices delivered", len(n.delivered_to)),
                ("  to anyone not affected", n.unaffected_reached),
                ("a second round would add", n.second_round_new),
                ("send status", n.status),
            ],
        )
    )


def _check_notices(n: NoticeResult) -> list[str]:
    problems = []
    if len(n.delivered_to) != n.affected:
        problems.append(f"{len(n.delivered_to)} notices for {n.affected} affected customers")
    if n.unaffected_reached:
        problems.append("a notice reached someone who was not affected")
    if n.second_round_new != 0:
        problems.append("a second notice round would tell someone twice")
    return problems


def _print_glitch(console: Console, g: GlitchResult) -> None:
    console.print(
        _table(
            "Registry-gift send",
            [
                ("audience (every customer)", g.audience),
                ("  with a gift fact (eligible)", g.eligible),
                ("preview predicted a halt", g.preview_halts),
                ("status", f"{g.status}: {g.halt_reason}"),
                ("mails delivered before the halt", len(g.delivered_to)),
                ("  to customers without a gift", g.delivered_without_gift),
                ("correction audience", g.correction_audience),
                ("corrections delivered", len(g.corrected_to)),
                ("  exactly the people who got the first mail", g.corrected_to == g.delivered_to),
            ],
        )
    )


def _check_glitch(g: GlitchResult) -> list[str]:
    problems = []
    if g.status != "halted":
        problems.append(f"the glitch send ended {g.status!r}, not halted")
    if g.delivered_without_gift:
        problems.append("a customer without a gift got the gift mail")
    if g.corrected_to != g.delivered_to or g.correction_audience != len(g.delivered_to):
        problems.append("the correction did not reach exactly the people who got the mail")
    return problems


__all__ = ["DemoReport", "run_demo"]
