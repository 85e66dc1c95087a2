"""The console in a real browser (headless Chromium): sign in with an API key and through a
real OIDC provider, work the demo's incident from its signals to breach notices, halt a
running send (and a stale page that tries again), approve a reveal that only its grantee then
sees, release a held message; on every page, no real address in the HTML, nothing loaded
from outside, no dialog opened by a script, no serious axe-core violation, and a
screenshot saved under tests/console/artefacts/.

The tests run in order against one seeded world."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from console_kit import ARTEFACTS, AXE, Tab
from console_world import ANOMALY_REASON, World
from sqlalchemy import select

from mailveil.access.models import RevealRequest
from mailveil.detect.evidence import verify_bundle
from mailveil.detect.models import Incident, Signal
from mailveil.ledger.models import LedgerEntry
from mailveil.notify.models import Send

pytestmark = pytest.mark.slow  # headless Chromium and an OIDC provider


def _session(world: World) -> Any:
    return world.env.runtime.session_factory()


def _clean(tab: Tab, *, allow: str | None = None) -> None:
    """The page as rendered holds no real address (but ``allow``), and everything it loaded
    came from the console's own origin."""
    html = tab.page.content().lower()
    leaked = {a for a in tab.world.addresses if a in html and a != allow}
    assert not leaked, f"{tab.page.url} shows real addresses: {sorted(leaked)[:3]}"
    outside = [u for u in tab.requests if not u.startswith(tab.world.base + "/")]
    assert not outside, f"{tab.page.url} loaded from outside: {outside[:3]}"
    assert not tab.dialogs, f"a script opened a dialog: {tab.dialogs}"


def _actor_did(world: World, kind: str, actor: str) -> bool:
    with _session(world) as s:
        return (
            s.scalar(
                select(LedgerEntry.seq).where(LedgerEntry.kind == kind, LedgerEntry.actor == actor)
            )
            is not None
        )


def test_sign_in_through_the_oidc_provider(world: World, tab: Any) -> None:
    t = tab()
    t.go("/console/incidents")  # not signed in: to the login page, and back after
    t.page.click("text=Sign in with Test SSO")
    t.page.fill("input[name=login]", "e-ria")
    t.page.fill("input[name=password]", "anything")
    t.page.click("button[type=submit]")
    t.page.click("button[type=submit]")  # the provider's consent page
    t.page.wait_for_url(re.compile(r".*/console/incidents$"))
    assert "Ria Patel · investigator" in t.page.inner_text("header")
    assert _actor_did(world, "console_signin", f"principal:{world.principals['e-ria']}")
    # Someone the provider vouches for but mailveil does not know is refused, with why.
    other = tab()
    other.go("/console/login")
    other.page.click("text=Sign in with Test SSO")
    other.page.fill("input[name=login]", "e-nobody")
    other.page.fill("input[name=password]", "anything")
    other.page.click("button[type=submit]")
    other.page.click("button[type=submit]")
    other.page.wait_for_selector("p.error")
    assert "no employee known to mailveil" in other.text()


def _oidc(t: Tab, login: str) -> None:
    t.go("/console/login")
    t.page.click("text=Sign in with Test SSO")
    t.page.fill("input[name=login]", login)
    t.page.fill("input[name=password]", "anything")
    t.page.click("button[type=submit]")
    t.page.click("button[type=submit]")
    t.page.wait_for_url(re.compile(r".*/console/$"))
    t.requests.clear()  # the provider's own pages are not the console's


def test_investigator_works_the_incident_from_signal_to_notices(world: World, tab: Any) -> None:
    t = tab()
    _oidc(t, "e-ria")
    ria = f"principal:{world.principals['e-ria']}"
    incident = world.incident_id
    # Triage: confirm the first of the incident's signals, dismiss one with a reason.
    with _session(world) as s:
        ids = s.scalars(
            select(Signal.id).where(Signal.incident_id == incident).order_by(Signal.id)
        ).all()
    t.go("/console/signals")
    t.shot("signals")
    t.page.click(f"form[action='/console/signals/{ids[0]}/confirm'] button")
    assert f"Signal {ids[0]} confirmed" in t.text()
    t.page.fill(f"#dismiss-{ids[1]}", "duplicate of the report <b>R-1</b>")
    t.page.click(f"form[action='/console/signals/{ids[1]}/dismiss'] button")
    assert f"Signal {ids[1]} dismissed" in t.text()
    # The incident: the graph, the evidence with its strength, the blast radius, the clock.
    t.go(f"/console/incidents/{incident}")
    assert t.page.locator("svg[aria-labelledby] >> text=given the aliases").count() == 1
    assert "authenticated" in t.text() and "Blast radius" in t.text()
    assert "left" in t.page.inner_text("p.clock")
    _clean(t)
    t.page.select_option("#status", "confirmed")
    t.page.fill("#status-reason", "aliases exported by one employee were spammed by a seller")
    t.page.click("form[action$='/status'] button")
    assert "now confirmed" in t.text()
    # Containment, behind its confirmation page.
    t.page.click("text=Contain…")
    assert "Contain incident" in t.page.inner_text("h1")
    t.shot("incident-contain-confirm")
    t.page.fill("#reason", "leak confirmed by alias evidence")
    t.page.click("button.danger")
    assert "Contained: 2 principals suspended" in t.text()
    t.shot("incident")
    # The evidence bundle verifies without the database.
    with t.page.expect_download() as download:
        t.page.click("text=Evidence bundle")
    bundle = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert verify_bundle(bundle, verifier_key=world.env.runtime.ledger.signer.verifier_key).ok
    t.go(f"/console/incidents/{incident}/report")
    assert "People affected" in t.text()
    t.shot("regulator-report")
    # Breach notices: prepared behind a confirmation, started, delivered.
    t.go(f"/console/incidents/{incident}")
    t.page.click("text=Breach notices…")
    t.page.click("text=Prepare the notices")
    assert "Breach notices prepared" in t.text()
    send_id = int(t.page.url.rstrip("/").rsplit("/", 1)[1])
    assert "Needs a second person" in t.text()
    assert t.page.locator("form[action$='/approve']").count() == 0  # not Ria's to approve
    approver = tab()
    _oidc(approver, "e-ava")
    approver.go(f"/console/sends/{send_id}")
    approver.page.click("form[action$='/approve'] button")
    assert "approved" in approver.text()
    t.go(f"/console/sends/{send_id}")
    t.page.click("form[action$='/start'] button")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with _session(world) as s:
            done = s.get(Send, send_id)
            if done is not None and done.status == "completed":
                break
        time.sleep(0.2)
    t.go(f"/console/sends/{send_id}")
    assert "completed" in t.text()
    t.shot("send-notices")
    with _session(world) as s:
        row = s.get(Incident, incident)
        assert row is not None and row.status == "contained"
    for kind in ("incident_status", "incident_action", "signal_triaged", "send_created"):
        assert _actor_did(world, kind, ria), f"{kind} is not recorded as the investigator"


def test_kill_switch_halts_a_running_send_and_a_stale_page_is_refused(
    world: World, tab: Any
) -> None:
    t = tab()
    t.sign_in(world.keys["investigator"])
    stale = t.context.new_page()
    path = f"/console/sends/{world.running_send_id}"
    stale.goto(world.base + path)
    t.go(path)
    assert "soaking" in t.text()
    t.shot("send-running")
    started = time.monotonic()
    t.page.click("#kill")
    assert "killed" in t.text()
    with _session(world) as s:
        send = s.get(Send, world.running_send_id)
        assert send is not None and send.status == "killed"
        assert send.stopped_by is not None and send.stopped_by.startswith("apikey:")
    assert time.monotonic() - started < 5
    # The page left open still offers the kill switch; using it changes nothing.
    stale.click("#kill")
    assert "is killed now (the page showed running); nothing was done" in stale.inner_text("main")
    with _session(world) as s:
        kills = s.scalars(
            select(LedgerEntry.seq).where(
                LedgerEntry.kind == "send_killed",
                LedgerEntry.ref == f"send:{world.running_send_id}",
            )
        ).all()
        assert len(kills) == 1


def test_approver_is_warned_and_grants_a_reveal_only_its_requester_sees(
    world: World, tab: Any
) -> None:
    a = tab()
    a.sign_in(world.keys["approver"])
    a.go(f"/console/sends/{world.approval_send_id}")
    assert "This send would halt at its first stage" in a.text()
    a.shot("send-approval-warning")
    a.go(f"/console/reveals/{world.reveal_id}")
    assert '<script>alert("xss")</script>' in a.text()  # shown as text, never run
    a.shot("reveal-approval")
    _clean(a)
    a.page.fill("#approve-note", "customer confirmed on the phone; case is open")
    a.page.click("form[action$='/approve'] button")
    assert "is granted" in a.text()
    with _session(world) as s:
        row = s.get(RevealRequest, world.reveal_id)
        assert row is not None and row.status == "granted"
        customer_id = row.customer_id
    address = next(a for cid, a in world.market.addresses.items() if cid == customer_id).lower()
    # The requester (Sam) sees the address once, on that page only.
    e = tab()
    e.sign_in(world.keys["employee"])
    e.go(f"/console/reveals/{world.reveal_id}")
    _clean(e)
    e.page.click("text=Show the address")
    assert address in e.page.inner_text("p.revealed").lower()
    _clean(e, allow=address)
    e.go(f"/console/reveals/{world.reveal_id}")
    _clean(e)


def test_a_held_message_is_shown_inert_and_released(world: World, tab: Any) -> None:
    t = tab()
    t.sign_in(world.keys["investigator"])
    t.go(f"/console/quarantine/{world.held[0]}")
    assert '<script>alert("xss")</script>' in t.page.inner_text("table.headers")
    assert "none followed" in t.text()
    _clean(t)
    t.shot("quarantine-message")
    before = world.env.sink.count()
    t.page.click("text=Release with the warning banner")
    assert "Released" in t.text()
    world.env.relay.flush()
    deadline = time.monotonic() + 10
    while world.env.sink.count() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    delivered = world.env.sink.received[before:]
    assert len(delivered) == 1
    assert "it was not sent by them" in delivered[0].data.decode(errors="replace")


PAGES = [
    ("admin", "home", "/console/"),
    ("admin", "incidents", "/console/incidents"),
    ("admin", "incident-2", "/console/incidents/{other}"),
    ("admin", "signals-all", "/console/signals?show=all"),
    ("admin", "reports", "/console/reports"),
    ("admin", "quarantine", "/console/quarantine"),
    ("admin", "sends", "/console/sends"),
    ("admin", "send-halted", "/console/sends/{halted}"),
    ("admin", "reveals", "/console/reveals?status=all"),
    ("admin", "employees", "/console/employees"),
    ("admin", "ledger", "/console/ledger?entry=3"),
    ("admin", "signals-queue", "/console/signals"),
    ("admin", "quarantine-held", "/console/quarantine/{held}"),
    ("admin", "reveal", "/console/reveals/{reveal}"),
    ("admin", "send-awaiting-approval", "/console/sends/{approval}"),
    ("admin", "contain-confirm", "/console/incidents/{other}/contain"),
    ("admin", "notices-confirm", "/console/incidents/{other}/notices"),
    ("admin", "not-found", "/console/sends/999999"),
    ("employee", "reveals-employee", "/console/reveals"),
    ("employee", "forbidden", "/console/incidents"),
    ("anonymous", "login", "/console/login"),
]
STATUS = {"not-found": 404, "forbidden": 403}


def _axe(t: Tab) -> list[dict[str, Any]]:
    # Evaluated through the DevTools protocol: the page's CSP (script-src 'self') stays on.
    t.page.evaluate(AXE.read_text(encoding="utf-8") + "\n;0")
    result = t.page.evaluate(
        "() => axe.run(document, {resultTypes: ['violations']}).then(r => ({"
        "passes: r.passes.length, violations: r.violations.map(v => ({id: v.id,"
        " impact: v.impact, nodes: v.nodes.length, target: v.nodes[0] && v.nodes[0].target}))}))"
    )
    assert result["passes"] > 10, "axe-core did not run its rules"
    return list(result["violations"])


def test_every_page_is_clean_accessible_and_photographed(world: World, tab: Any) -> None:
    tabs: dict[str, Tab] = {}
    for role in ("admin", "employee", "anonymous"):
        tabs[role] = tab()
        if role != "anonymous":
            tabs[role].sign_in(world.keys[role])
    serious: dict[str, list[dict[str, Any]]] = {}
    report: dict[str, Any] = {}
    for role, name, path in PAGES:
        t = tabs[role]
        t.requests.clear()
        path = path.format(
            other=world.other_incident_id,
            halted=world.halted_send_id,
            held=world.held[1],
            reveal=world.reveal_id,
            approval=world.approval_send_id,
        )
        response = t.go(path)
        assert response.status == STATUS.get(name, 200), (path, response.status)
        assert "Content-Security-Policy" in {k.title(): v for k, v in response.headers.items()}
        _clean(t)
        t.shot(name)
        if name == "employees":
            alert = t.page.locator("tr", has_text=ANOMALY_REASON).inner_text()
            assert "Mal Lory" in alert
        found = _axe(t)
        report[name] = found
        bad = [v for v in found if v["impact"] in ("serious", "critical")]
        if bad:
            serious[path] = bad
    # Pages visited by the earlier tests, checked again for accessibility.
    for name, path in (
        ("incident", f"/console/incidents/{world.incident_id}"),
        ("send-running", f"/console/sends/{world.running_send_id}"),
        ("quarantine-list", "/console/quarantine"),
        ("regulator-report", f"/console/incidents/{world.incident_id}/report"),
    ):
        t = tabs["admin"]
        t.go(path)
        found = _axe(t)
        report[name] = found
        bad = [v for v in found if v["impact"] in ("serious", "critical")]
        if bad:
            serious[path] = bad
    (ARTEFACTS / "axe.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    assert not serious, serious


def test_the_customers_access_log_embeds_in_their_language(world: World, tab: Any) -> None:
    import httpx

    customer_id = next(iter(world.market.addresses))
    minted = httpx.post(
        world.base + "/console/embed/links",
        json={"customer_id": customer_id, "lang": "de-AT"},
        headers={"Authorization": f"Bearer {world.keys['backend']}"},
    )
    assert minted.status_code == 200, minted.text
    link = minted.json()
    t = tab()
    t.page.goto(link["url"])
    assert t.page.inner_text("h1") == "Wer Ihre Kontaktdaten gesehen hat"
    assert t.page.get_attribute("html", "lang") == "de"
    _clean(t)
    t.shot("embed-access-log-de")
    assert not [v for v in _axe(t) if v["impact"] in ("serious", "critical")]
    data = httpx.get(link["json_url"]).json()
    assert data["language"] == "de" and data["entries"]
    assert all(e["what"] in ("alias", "real_address") for e in data["entries"])
