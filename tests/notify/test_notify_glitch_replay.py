"""The registry-glitch replay at small scale, through the API, the worker and the real relay:
2,000 customers, 2 % with a registry, the gift template sent to all of them. It halts at its
first stage, nobody without a gift fact gets mail, and the correction's audience is exactly
the delivered set (taken from the ledger)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import notify_kit as kit
import pytest
from fastapi.testclient import TestClient
from notify_kit import GIFT_TEMPLATE, SORRY_TEMPLATE, NotifyEnv, add_facts, gift_facts
from sqlalchemy import select

from mailveil.api.app import create_app
from mailveil.auth.keys import Role, issue_key
from mailveil.ledger.models import LedgerEntry

pytestmark = pytest.mark.slow  # 2,000 customers through the API, worker and relay

CUSTOMERS = 2000


@pytest.fixture
def env(settings: kit.Settings, notify_db: kit.sessionmaker[kit.Session]) -> Iterator[NotifyEnv]:
    yield from kit.open_env(
        kit.notify_settings(settings, notify_min_stage_size=100), notify_db, CUSTOMERS
    )


def test_glitch_replay(env: NotifyEnv) -> None:
    registries = list(range(1, CUSTOMERS + 1, 50))  # 2 %
    session = env.session()
    add_facts(session, gift_facts(registries))
    token = issue_key(session, Role.BACKEND, label="backend").token
    admin = {"Authorization": f"Bearer {issue_key(session, Role.ADMIN, label='ops').token}"}
    session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(env.runtime), raise_server_exceptions=False) as client:
        r = client.post("/v1/templates", json=GIFT_TEMPLATE, headers=headers)
        assert r.status_code == 201 and r.json()["sendable"], r.text
        assert client.post("/v1/templates", json=SORRY_TEMPLATE, headers=headers).json()["sendable"]
        audience = {"customers": [{"customer": f"c{n}"} for n in range(1, CUSTOMERS + 1)]}
        body = {"template": GIFT_TEMPLATE["name"], "audience": audience}
        preview = client.post("/v1/sends?preview=true", json=body, headers=headers).json()
        assert preview["counts"]["eligible"] == len(registries)
        assert preview["would_halt_at_first_stage"] is True
        assert preview["audience_source"] == "list"
        # The guard tells a mis-targeted send from a large correct one.
        aim = preview["targeting"]
        assert aim["verdict"] == "mis-targeted" and aim["rule_population"] == len(registries)
        assert "Reference None" not in str(preview["rendered"])
        send = client.post("/v1/sends", json=body, headers=headers).json()
        # 40 eligible against an expected volume of 100: no approval needed.
        assert send["status"] == "ready", send
        assert client.post(f"/v1/sends/{send['id']}/start", headers=headers).status_code == 202
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = client.get(f"/v1/sends/{send['id']}", headers=headers).json()
            if state["status"] not in ("ready", "running"):
                break
            time.sleep(0.2)
        assert state["status"] == "halted" and state["stage"] == 0, state
        assert "ineligible" in state["halt_reason"]
        env.flush()
        delivered = env.delivered_numbers()
        assert set(delivered) <= set(registries)  # nobody without a gift fact
        assert len(delivered) == state["recipients"].get("delivered", 0)
        signals = session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "signal")).all()
        assert any('"send_gate_failed"' in s.detail for s in signals)
        # The halt is a signal anyone watching signals sees, not only a send's status.
        listed = client.get("/v1/signals?kind=send_gate_failed", headers=admin).json()["items"]
        assert [s["evidence"]["send"] for s in listed] == [send["id"]]
        assert listed[0]["evidence"]["gate"] == "ineligible" and listed[0]["incident_id"] is None
        fix = client.post(
            f"/v1/sends/{send['id']}/correction",
            json={"template": SORRY_TEMPLATE["name"]},
            headers=headers,
        ).json()
        assert fix["recipients"].get("pending", 0) == len(delivered)
        before = len(env.sink.recipients())
        client.post(f"/v1/sends/{fix['id']}/start", headers=headers)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = client.get(f"/v1/sends/{fix['id']}", headers=headers).json()
            if state["status"] not in ("ready", "running"):
                break
            time.sleep(0.2)
        assert state["status"] == "completed", state
        env.flush()
        corrected = env.delivered_numbers()  # every mail so far, originals and corrections
        assert len(env.sink.recipients()) - before == len(delivered)
        assert sorted(set(corrected)) == sorted(set(delivered))
        assert len(corrected) == 2 * len(delivered)
