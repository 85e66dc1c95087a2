"""One seeded world for the console's tests: the demo's marketplace after the insider's leak
(signals and an open incident, not yet worked), a stranger's message held in quarantine, a
reveal request waiting, a send soaking after its first stage, one awaiting approval that
would halt, the registry-gift story's sends; `mailveil serve`'s app on a loopback port; and
a real OIDC provider (node, oidc-provider) people can sign in through."""

from __future__ import annotations

import dataclasses
import email.utils
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import select

from mailveil.access.reveals import request_reveal
from mailveil.api.app import create_app
from mailveil.auth.keys import Role, issue_key
from mailveil.contacts.customers import customer_address
from mailveil.contacts.models import Alias, Customer, SupportCase
from mailveil.db.session import session_scope
from mailveil.demo.harness import LOOPBACK, DemoEnv, free_port
from mailveil.demo.leak import stage_leak
from mailveil.demo.notify_acts import GIFT, run_glitch
from mailveil.demo.story import DEMO_CONTROLLER, OUTSIDE_DOMAINS
from mailveil.demo.world import DEMO_EMPLOYEES_CEDAR, Market, build_market
from mailveil.detect.jobs import run_detection
from mailveil.detect.models import Incident
from mailveil.detect.signals import record_signal
from mailveil.incidents.controller import set_controller
from mailveil.notify.audience import Entry
from mailveil.notify.models import Fact, Send
from mailveil.notify.queue import Dispatcher
from mailveil.notify.sends import create_send
from mailveil.notify.templates import get_template, register_template
from mailveil.relay.context import RelayContext
from mailveil.relay.dns import StaticResolver
from mailveil.relay.release import list_held
from mailveil.relay.server import RelayThread

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
STRANGER_DOMAIN = "strangers.example"
HOSTILE = '<script>alert("xss")</script><img src="http://evil.example/p.png">'
ANOMALY_REASON = "listed 64 customers in one export, 30x the median of the team"
CLIENT_ID, CLIENT_SECRET = "mailveil-console", "console-test-secret"
# Who may sign in through the test provider: Ria (investigator) and Ava (approver).
OIDC_ACCOUNTS = {
    "e-ria": {"name": "Ria Patel", "roles": ["investigator"]},
    "e-ava": {"name": "Ava Chen", "roles": ["approver", "investigator"]},
    "e-nobody": {"name": "Not An Employee", "roles": ["admin"]},
}


@dataclass
class World:
    base: str
    env: DemoEnv
    market: Market
    keys: dict[str, str]
    incident_id: int
    other_incident_id: int
    held: list[str]  # a stranger's messages in quarantine: [0] is released, [1] stays
    reveal_id: int
    running_send_id: int
    approval_send_id: int
    halted_send_id: int
    addresses: set[str] = field(default_factory=set)
    principals: dict[str, int] = field(default_factory=dict)
    stop: list[Any] = field(default_factory=list)

    @property
    def settings(self) -> Any:
        return self.env.settings

    def close(self) -> None:
        for closer in reversed(self.stop):
            closer()


def start_oidc(port: int, redirect_uri: str) -> subprocess.Popen[bytes]:
    subprocess.run([str(OIDC_DIR.parents[2] / "scripts" / "ensure-node-tools.sh")], check=True)
    proc = subprocess.Popen(
        ["node", str(OIDC_DIR / "provider.mjs"), str(port), CLIENT_ID, CLIENT_SECRET,
         redirect_uri, json.dumps(OIDC_ACCOUNTS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "NODE_ENV": "test"},
    )  # fmt: skip
    assert proc.stdout is not None
    said = []
    while not said or not said[-1].startswith("ready"):
        line = proc.stdout.readline().decode()
        if not line:  # it exited
            proc.kill()
            raise RuntimeError("the OIDC provider did not start: " + "".join(said))
        said.append(line)
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
    return proc


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def _stranger_mail(alias: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Totally Legit {HOSTILE} <promo@{STRANGER_DOMAIN}>"
    msg["To"] = alias
    msg["Subject"] = f"Win a prize {HOSTILE}"
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = email.utils.make_msgid(domain=STRANGER_DOMAIN)
    msg.set_content("Claim your prize now.")
    msg.add_alternative(
        f'<html><body><p>Claim now</p>{HOSTILE}<a href="http://evil.example/claim">here</a>'
        '<img src="https://tracker.evil.example/open.gif"></body></html>',
        subtype="html",
    )
    return msg


def _quarantine_one(env: DemoEnv, market: Market) -> None:
    """A stranger writes to a Cosy Home alias through a relay set to quarantine strangers."""
    records: dict[tuple[str, str], list[str]] = {}
    for domain in env.domains.values():
        records.update(domain.records())
    runtime = dataclasses.replace(
        env.runtime, settings=env.settings.with_overrides(relay_stranger_action="quarantine")
    )
    relay = RelayThread(RelayContext.load(runtime, resolver=StaticResolver(records)), port=0)
    relay.start()
    try:
        with env.runtime.session_factory() as session:
            alias = session.scalar(
                select(Alias.address)
                .where(Alias.principal_id == market.sellers["s-cosy"].id)
                .order_by(Alias.id)
                .limit(1)
            )
        assert alias
        import smtplib

        for _ in range(2):  # one to release, one that stays held
            data = env.domains[STRANGER_DOMAIN].sign(_stranger_mail(alias).as_bytes(policy=SMTP))
            with smtplib.SMTP(LOOPBACK, relay.port, local_hostname="mx.strangers.example") as smtp:
                smtp.sendmail(f"promo@{STRANGER_DOMAIN}", [alias], data)
        relay.flush()
    finally:
        relay.stop()


def _sends(env: DemoEnv, market: Market, dispatcher: Dispatcher) -> tuple[int, int, int]:
    runtime = env.runtime
    glitch = run_glitch(env, market)
    with session_scope(runtime.session_factory) as session:
        halted = session.scalar(select(Send.id).where(Send.status == "halted"))
        owners = session.scalars(
            select(Customer.external_id)
            .join(Fact, Fact.customer_id == Customer.id)
            .where(Fact.kind == "registry.gift_purchased")
        ).all()
        gift = get_template(session, GIFT["name"])
        # Soaks for an hour after its first stage: running until someone stops it.
        soaking = create_send(
            session,
            runtime.settings.with_overrides(notify_soak_seconds=3600.0),
            runtime.ledger,
            template=gift,
            entries=[Entry(ext, None) for ext in owners],
            actor="registry-job",
        )
        reminder = register_template(
            session,
            runtime.settings,
            {**{k: v for k, v in GIFT.items() if k != "expected_volume"}, "name": "gift-reminder"},
            actor="registry-team",
        )
        everyone = [Entry(c.external_id, None) for c in market.customers]
        waiting = create_send(
            session, runtime.settings, runtime.ledger, template=reminder, entries=everyone,
            actor="registry-job",
        )  # fmt: skip
        ids = (soaking.id, waiting.id, halted)
    assert glitch.status == "halted" and ids[2] is not None
    dispatcher.start(ids[0])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with runtime.session_factory() as session:
            send = session.get(Send, ids[0])
            if send is not None and send.status == "running" and send.stage_done_at is not None:
                break
        time.sleep(0.1)
    else:
        raise AssertionError("the soaking send did not finish its first stage")
    return ids[0], ids[1], int(ids[2])


def _serve(env: DemoEnv, port: int, dispatcher: Dispatcher) -> uvicorn.Server:
    app = create_app(env.runtime)
    app.state.notify_dispatcher = dispatcher
    server = uvicorn.Server(
        uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the console's server did not start")
        time.sleep(0.05)
    return server


def build_world(*, customers: int = 150) -> World:
    api_port, oidc_port = free_port(), free_port()
    base = f"http://{LOOPBACK}:{api_port}"
    stop: list[Any] = []
    oidc = start_oidc(oidc_port, f"{base}/console/oidc/callback")
    stop.append(lambda: _stop_process(oidc))
    env = DemoEnv.start(
        [*OUTSIDE_DOMAINS, STRANGER_DOMAIN],
        policy_files={"employees.cedar": DEMO_EMPLOYEES_CEDAR},
        notify_soak_seconds=0.0,
        notify_min_stage_size=200,
        relay_stranger_action="banner",
        api_port=api_port,
        console_oidc_issuer=f"http://{LOOPBACK}:{oidc_port}",
        console_oidc_client_id=CLIENT_ID,
        console_oidc_client_secret=CLIENT_SECRET,
        console_oidc_label="Test SSO",
    )
    stop.append(env.stop)
    runtime = env.runtime
    with runtime.session_factory() as session:
        market = build_market(session, runtime, customers=customers)
    with session_scope(runtime.session_factory) as session:
        # The privacy officer's details: breach notices name the controller and contact.
        set_controller(
            session,
            settings=runtime.settings,
            ledger=runtime.ledger,
            changes=DEMO_CONTROLLER,
            actor="test:privacy-officer",
        )
    stage_leak(env, market, export_rows=60, reporters=8)
    _quarantine_one(env, market)
    with session_scope(runtime.session_factory) as session:
        run_detection(session, runtime.settings, runtime.ledger)
        # An alert as the anomaly job files one (the job needs weeks of history to score a
        # day; its statistics are tested in tests/detect): the page must show its reasons.
        record_signal(
            session,
            runtime.ledger,
            kind="access_anomaly",
            confidence="anomaly",
            summary="unusual access today: 64 customers listed, 30x the team's median",
            source_principal_id=market.employees["e-mal"].id,
            score=9.5,
            evidence={"day": "today", "reasons": [ANOMALY_REASON], "features": {}},
            group=False,
        )
    keys: dict[str, str] = {"approver": market.keys["ava"]}
    with session_scope(runtime.session_factory) as session:
        sam = market.employees["e-sam"]
        case = session.scalar(
            select(SupportCase).where(SupportCase.assignee_id == sam.id).order_by(SupportCase.id)
        )
        assert case is not None
        reveal = request_reveal(
            session,
            settings=runtime.settings,
            policy=runtime.policy,
            ledger=runtime.ledger,
            employee_id=sam.id,
            customer_id=case.customer_id,
            case=case.external_id,
            justification=f"Customer asked to confirm the address on file {HOSTILE}",
        )
        reveal_id = reveal.id
        keys["admin"] = issue_key(session, Role.ADMIN, label="console admin").token
        keys["investigator"] = issue_key(session, Role.INVESTIGATOR, label="console inv").token
        keys["employee"] = issue_key(session, Role.EMPLOYEE, principal_id=sam.id).token
        keys["backend"] = issue_key(session, Role.BACKEND, label="marketplace").token
        keys["seller"] = issue_key(
            session, Role.SELLER, principal_id=market.sellers["s-barn"].id
        ).token
        addresses = {
            customer_address(session, runtime.vault, c).lower()
            for c in session.scalars(select(Customer))
        }
    # Last, as it starts a send worker that keeps writing to the database.
    dispatcher = Dispatcher(runtime)
    stop.append(dispatcher.close)
    running, waiting, halted = _sends(env, market, dispatcher)

    with runtime.session_factory() as session:
        incidents = {i.source_principal_id: i.id for i in session.scalars(select(Incident))}
        held = [
            e
            for e in list_held(session, runtime.settings)
            if (e.detail or {}).get("envelope_from") == f"promo@{STRANGER_DOMAIN}"
        ]
    server = _serve(env, api_port, dispatcher)
    stop.append(lambda: setattr(server, "should_exit", True))
    return World(
        base=base,
        env=env,
        market=market,
        keys=keys,
        incident_id=incidents[market.employees["e-mal"].id],
        other_incident_id=incidents[market.sellers["s-cosy"].id],
        held=[e.held.sha256 for e in held],
        reveal_id=reveal_id,
        running_send_id=running,
        approval_send_id=waiting,
        halted_send_id=halted,
        addresses=addresses,
        principals={
            **{k: p.id for k, p in market.employees.items()},
            **{k: p.id for k, p in market.sellers.items()},
        },
        stop=stop,
    )
