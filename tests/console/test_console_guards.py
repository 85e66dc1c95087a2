"""Bad input at the console, over plain HTTP against the seeded world: forged or missing CSRF
tokens, forms from another site, one role reaching for another's pages, a stale page acting
on a finished send, HTML and script in user-supplied fields, tampered and expired customer
links, open redirects, and sessions that must end (sign-out, a revoked key)."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from console_kit import csrf_of, sign_in_http
from console_world import HOSTILE, World
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import func, select

from mailveil.auth.keys import Role, issue_key, revoke_key
from mailveil.console.embed import SALT
from mailveil.console.sessions import console_secret
from mailveil.console.web import CSP
from mailveil.contacts.models import Alias, Principal
from mailveil.detect.jobs import run_detection
from mailveil.detect.models import Incident, Signal
from mailveil.ledger.events import Event
from mailveil.ledger.models import LedgerEntry
from mailveil.notify.models import Send


def _ledger_size(world: World) -> int:
    with world.env.runtime.session_factory() as s:
        return int(s.scalar(select(func.count()).select_from(LedgerEntry)) or 0)


def _new_signal(world: World) -> int:
    with world.env.runtime.session_factory() as s:
        found = s.scalar(
            select(Signal.id)
            .where(Signal.triage == "new", Signal.incident_id == world.other_incident_id)
            .order_by(Signal.id)
        )
        if found is None:
            found = s.scalar(select(Signal.id).where(Signal.triage == "new").order_by(Signal.id))
    assert found is not None
    return int(found)


def _person(world: World, role: Role, **kw: Any) -> str:
    with world.env.runtime.session_factory() as s:
        token = issue_key(s, role, label="guard test", **kw).token
        s.commit()
    return token


def test_forms_need_this_sessions_token_from_this_origin(world: World, http: httpx.Client) -> None:
    good = sign_in_http(http, world.keys["investigator"])
    other = httpx.Client(base_url=world.base, follow_redirects=False)
    theirs = sign_in_http(other, _person(world, Role.INVESTIGATOR))
    other.close()
    signal = _new_signal(world)
    url = f"/console/signals/{signal}/dismiss"
    before = _ledger_size(world)
    for form, headers in (
        ({"reason": "no token"}, {}),
        ({"reason": "forged", "csrf": "0" * 64}, {}),
        ({"reason": "another session's token", "csrf": theirs}, {}),
        ({"reason": "from elsewhere", "csrf": good}, {"Origin": "http://evil.example"}),
    ):
        response = http.post(url, data=form, headers=headers)
        assert response.status_code == 403, (form, response.status_code)
        assert "nothing was changed" in response.text.lower()
    assert _ledger_size(world) == before
    with world.env.runtime.session_factory() as s:
        row = s.get(Signal, signal)
        assert row is not None and row.triage == "new"
    # The same form with the right token from the right origin works.
    ok = http.post(
        url, data={"reason": "checked: a test", "csrf": good}, headers={"Origin": world.base}
    )
    assert ok.status_code == 303


def test_sign_in_form_needs_its_token_and_console_roles(world: World, http: httpx.Client) -> None:
    assert http.post("/console/login", data={"token": world.keys["admin"]}).status_code == 403
    for role in ("seller", "backend"):
        login = http.get("/console/login")
        response = http.post(
            "/console/login", data={"token": world.keys[role], "csrf": csrf_of(login.text)}
        )
        assert response.status_code == 401
        assert "have no console" in response.text
        assert world.keys[role] not in response.text  # a key is never echoed
    login = http.get("/console/login")
    bad = http.post("/console/login", data={"token": "mvk_nope_nope", "csrf": csrf_of(login.text)})
    assert bad.status_code == 401 and "unknown or revoked API key" in bad.text


RESPONDERS_ONLY = ["/console/incidents", "/console/quarantine", "/console/employees"]


@pytest.mark.parametrize(
    ("role", "forbidden", "allowed"),
    [
        ("approver", [*RESPONDERS_ONLY, "/console/signals", "/console/reports"],
         ["/console/sends", "/console/reveals"]),
        ("employee", [*RESPONDERS_ONLY, "/console/sends", "/console/signals"],
         ["/console/reveals", "/console/ledger"]),
        ("investigator", [], ["/console/incidents", "/console/sends", "/console/employees"]),
    ],
)  # fmt: skip
def test_each_role_reaches_only_its_pages(
    world: World, http: httpx.Client, role: str, forbidden: list[str], allowed: list[str]
) -> None:
    sign_in_http(http, world.keys[role])
    for path in forbidden:
        response = http.get(path)
        assert response.status_code in (403, 404), (role, path, response.status_code)
    for path in allowed:
        assert http.get(path).status_code == 200, (role, path)


def test_actions_check_the_role_too(world: World, http: httpx.Client) -> None:
    token = sign_in_http(http, world.keys["employee"])
    admin = httpx.Client(base_url=world.base, follow_redirects=False)
    admin_token = sign_in_http(admin, world.keys["admin"])
    before = _ledger_size(world)
    for url in (
        f"/console/sends/{world.approval_send_id}/approve",
        f"/console/sends/{world.running_send_id}/kill",
        f"/console/incidents/{world.incident_id}/contain",
        f"/console/quarantine/{world.held[1]}/delete",
    ):
        data = {"csrf": token, "seen_status": "running", "reason": "x", "confirm": "yes"}
        assert http.post(url, data=data).status_code == 403, url
    # An admin is no approver: reveals are answered by approvers only.
    response = admin.post(
        f"/console/reveals/{world.reveal_id}/deny", data={"csrf": admin_token, "note": "no"}
    )
    admin.close()
    assert response.status_code == 403
    assert _ledger_size(world) == before
    # Not signed in at all: pages send you to sign in, actions are refused.
    anonymous = httpx.Client(base_url=world.base, follow_redirects=False)
    assert anonymous.get("/console/incidents").status_code == 303
    assert anonymous.post(f"/console/sends/{world.running_send_id}/kill").status_code == 403
    anonymous.close()


def test_a_stale_page_never_acts_on_a_finished_send(world: World, http: httpx.Client) -> None:
    token = sign_in_http(http, world.keys["admin"])
    send_id = world.halted_send_id
    before = _ledger_size(world)
    for action, seen in (("kill", "running"), ("approve", "awaiting_approval"), ("start", "ready")):
        response = http.post(
            f"/console/sends/{send_id}/{action}", data={"csrf": token, "seen_status": seen}
        )
        assert response.status_code == 409, (action, response.status_code)
        assert "is halted now" in response.text and "nothing was done" in response.text
    # Even a page that knew it was halted cannot kill it again.
    again = http.post(
        f"/console/sends/{send_id}/kill", data={"csrf": token, "seen_status": "halted"}
    )
    assert again.status_code == 409 and "already halted" in again.text
    assert _ledger_size(world) == before
    with world.env.runtime.session_factory() as s:
        send = s.get(Send, send_id)
        assert send is not None and send.status == "halted"


def test_html_and_script_in_user_fields_is_shown_as_text(world: World, http: httpx.Client) -> None:
    token = sign_in_http(http, world.keys["investigator"])
    signal = _new_signal(world)
    http.post(f"/console/signals/{signal}/dismiss", data={"csrf": token, "reason": HOSTILE})
    approver = httpx.Client(base_url=world.base, follow_redirects=False)
    sign_in_http(approver, world.keys["approver"])
    pages = {
        "signals": http.get("/console/signals?show=all").text,
        "held": http.get(f"/console/quarantine/{world.held[1]}").text,
        "reveal": approver.get(f"/console/reveals/{world.reveal_id}").text,
        "reveals": approver.get("/console/reveals?status=all").text,
    }
    approver.close()
    for name, html in pages.items():
        assert "&lt;script&gt;alert(" in html, name  # the text is there, escaped
        assert "<script>alert" not in html and '<img src="http://evil' not in html, name
        assert not re.search(r"<script(?![^>]*src=\"/console/static/)", html), name


def test_every_page_sends_the_security_headers(world: World, http: httpx.Client) -> None:
    login = http.get("/console/login")
    assert login.headers["content-security-policy"] == CSP
    assert login.headers["x-frame-options"] == "DENY"
    assert login.headers["cache-control"] == "no-store"
    assert login.headers["x-content-type-options"] == "nosniff"
    response = http.post(
        "/console/login", data={"token": world.keys["admin"], "csrf": csrf_of(login.text)}
    )
    cookie = next(
        v for k, v in response.headers.multi_items() if k == "set-cookie" and "mv_console=" in v
    )
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
    report = http.get(f"/console/incidents/{world.incident_id}/report/document.html")
    assert report.status_code == 200
    assert "sandbox" in report.headers["content-security-policy"]


def test_sign_in_never_redirects_elsewhere(world: World, http: httpx.Client) -> None:
    for target in ("//evil.example/x", "https://evil.example", "/console/\\\\evil", "/elsewhere"):
        login = http.get("/console/login", params={"next": target})
        response = http.post(
            "/console/login",
            data={"token": world.keys["admin"], "csrf": csrf_of(login.text), "next": target},
        )
        assert response.headers["location"] == "/console/", target


def test_signing_out_or_revoking_the_key_ends_the_session(world: World) -> None:
    key = _person(world, Role.INVESTIGATOR)
    for how in ("sign out", "revoke"):
        client = httpx.Client(base_url=world.base, follow_redirects=False)
        token = sign_in_http(client, key if how == "sign out" else _person(world, Role.ADMIN))
        cookie = client.cookies.get("mv_console", path="/console")
        assert client.get("/console/incidents").status_code == 200
        if how == "sign out":
            assert client.post("/console/logout", data={"csrf": token}).status_code == 303
        else:
            with world.env.runtime.session_factory() as s:
                key_id = s.scalar(
                    select(LedgerEntry.actor)
                    .where(LedgerEntry.kind == "console_signin")
                    .order_by(LedgerEntry.seq.desc())
                )
                assert key_id is not None and key_id.startswith("apikey:")
                revoke_key(s, key_id.split(":", 1)[1])
                s.commit()
        replay = httpx.Client(base_url=world.base, follow_redirects=False)
        replay.cookies.set("mv_console", cookie or "", path="/console")
        assert replay.get("/console/incidents").status_code == 303, how
        replay.close()
        client.close()


def test_customer_links_cannot_be_forged_reused_late_or_minted_by_others(
    world: World, http: httpx.Client
) -> None:
    customer_id = next(iter(world.market.addresses))
    seller = http.post(
        "/console/embed/links",
        json={"customer_id": customer_id},
        headers={"Authorization": f"Bearer {world.keys['seller']}"},
    )
    assert seller.status_code == 403
    minted = http.post(
        "/console/embed/links",
        json={"customer_id": customer_id, "lang": "fr"},
        headers={"Authorization": f"Bearer {world.keys['backend']}"},
    ).json()
    token = minted["url"].split("t=", 1)[1]
    page = http.get("/console/embed/access-log", params={"t": token})
    assert page.status_code == 200 and "Qui a vu vos coordonnées" in page.text
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in policy and "script-src" not in policy
    assert "x-frame-options" not in page.headers
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert http.get("/console/embed/access-log", params={"t": tampered}).status_code == 403

    class TwoHoursAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 7200

    old = URLSafeTimedSerializer(console_secret(world.settings), salt=SALT, signer=TwoHoursAgo)
    late = old.dumps({"c": customer_id, "l": None})
    expired = http.get("/console/embed/access-log.json", params={"t": late})
    assert expired.status_code == 403 and "expired" in expired.json()["detail"]


def _weak_incident(world: World) -> int:
    """Strangers, unauthenticated, at the aliases of two customers the seller had written
    to (as the relay records them): detection names the seller, but only weakly."""
    runtime = world.env.runtime
    seller = world.market.sellers["s-kids"]
    with runtime.session_factory() as s:
        aliases = list(
            s.execute(
                select(Alias.address, Alias.customer_id)
                .where(Alias.principal_id == seller.id)
                .order_by(Alias.id)
                .limit(2)
            )
        )
        assert len(aliases) == 2
        for address, customer_id in aliases:
            wrote = Event(
                "message",
                f"principal:{seller.id}",
                f"customer:{customer_id}",
                address,
                "to_customer",
                "shipping",
                {"principal": f"principal:{seller.id}", "size": 1, "sha256": "0" * 64},
            )
            stranger = Event(
                "stranger_at_alias",
                None,
                f"customer:{customer_id}",
                address,
                "to_customer",
                None,
                {
                    "principal": f"principal:{seller.id}",
                    "reply": "250 2.7.0",
                    "envelope_from": "deals@framer.example",
                    "header_from": "deals@framer.example",
                    "authenticated_principal": None,
                    "spf": "fail",
                    "spf_domain": "framer.example",
                    "spf_aligned": False,
                    "dkim": [],
                    "from_domain": "framer.example",
                    "dmarc": "none",
                    "action": "banner",
                },
            )
            runtime.ledger.append(s, [wrote, stranger])
        run_detection(s, runtime.settings, runtime.ledger)
        s.commit()
        found = s.scalar(
            select(Incident.id).where(
                Incident.source_principal_id == seller.id, Incident.status == "open"
            )
        )
    assert found is not None
    return int(found)


def test_weak_evidence_containment_waits_for_a_second_person(
    world: World, http: httpx.Client
) -> None:
    incident_id = _weak_incident(world)
    first = sign_in_http(http, world.keys["investigator"])
    page = http.get(f"/console/incidents/{incident_id}/contain")
    assert "A second person must confirm" in page.text and "Request containment" in page.text
    url = f"/console/incidents/{incident_id}/contain"
    asked = http.post(url, data={"csrf": first, "reason": "two aliases spammed"})
    assert asked.status_code == 303
    landed = http.get(asked.headers["location"])
    assert "Containment requested" in landed.text and "Nothing is suspended yet" in landed.text
    with world.env.runtime.session_factory() as s:
        row = s.get(Incident, incident_id)
        seller = s.get(Principal, world.market.sellers["s-kids"].id)
        assert row is not None and row.status == "open" and seller is not None
        assert seller.status == "active"
    # The same person cannot confirm their own request.
    again = http.post(url, data={"csrf": first, "reason": "still me"})
    assert again.status_code == 409
    other = httpx.Client(base_url=world.base, follow_redirects=False)
    second = sign_in_http(other, _person(world, Role.INVESTIGATOR))
    assert "Confirm containment" in other.get(url).text
    done = other.post(url, data={"csrf": second, "reason": "confirmed: same shop"})
    other.close()
    assert done.status_code == 303
    with world.env.runtime.session_factory() as s:
        row = s.get(Incident, incident_id)
        seller = s.get(Principal, world.market.sellers["s-kids"].id)
        assert row is not None and row.status == "contained"
        assert seller is not None and seller.status == "suspended"
