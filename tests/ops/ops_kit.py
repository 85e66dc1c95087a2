"""Shared by the ops tests: the notification kit's world (relay on loopback, a sink as the
smarthost, customers with real addresses) with the JSON logs captured to a file."""

from __future__ import annotations

import json
import logging
import smtplib
import sys
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from mailveil.auth.keys import Role, issue_key
from mailveil.contacts.models import Alias
from mailveil.notify.audience import Entry
from mailveil.notify.queue import run_to_end
from mailveil.notify.sends import create_send, get_send
from mailveil.runtime import Runtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notify"))

import notify_kit

kit = notify_kit
STRANGER = "nosy.stranger@elsewhere-mail.example"
NEW_CUSTOMER = "late.joiner@people.example"


def _smtp_session(env: kit.NotifyEnv, alias: str) -> list[int]:
    """A stranger writes to an alias, a relay attempt to a real address, a VRFY of one."""
    assert env.relay is not None
    codes = []
    with smtplib.SMTP(env.relay.host, env.relay.port, timeout=10) as client:
        client.ehlo("client.example")
        msg = EmailMessage()
        msg["From"] = STRANGER
        msg["To"] = alias
        msg["Subject"] = f"hello {kit.address(1)}"
        msg.set_content(f"I know you are {kit.address(2)}")
        try:
            client.send_message(msg, from_addr=STRANGER, to_addrs=[alias])
            codes.append(250)
        except smtplib.SMTPResponseException as exc:
            codes.append(exc.smtp_code)
        client.mail(STRANGER)
        codes.append(client.rcpt(kit.address(3))[0])
        client.rset()
        codes.append(client.verify(kit.address(4))[0])
    return codes


def shared_runtime(env: kit.NotifyEnv) -> Runtime:
    """The env's runtime with the relay thread's metrics: one registry, as in `serve`."""
    assert env.relay is not None
    return replace(env.runtime, metrics=env.relay.ctx.runtime.metrics)


def drive_slice(env: kit.NotifyEnv, runtime: Runtime, client: TestClient) -> str:
    """API calls with addresses in them, a send through the relay to the customers' real
    addresses, a stranger's SMTP session, a detection run. The admin key's token."""
    session = env.session()
    token = issue_key(session, Role.ADMIN, label="ops test").token
    session.commit()
    headers = {"Authorization": f"Bearer {token}", "X-Request-Id": "req-ops-1"}
    created = client.post(
        "/v1/customers",
        json={"external_id": "late", "email": NEW_CUSTOMER, "country": "DE"},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    assert created.headers["x-request-id"] == "req-ops-1"
    bad = client.post(
        "/v1/customers",
        json={"external_id": "bad", "email": kit.address(5) + "@@", "country": "DE"},
        headers=headers,
    )
    assert bad.status_code in (400, 422)
    assert client.get(f"/v1/customers/{kit.address(6)}", headers=headers).status_code >= 400
    kit.add_facts(session, kit.gift_facts([1, 2, 3]))
    template = kit.register(session, env, kit.GIFT_TEMPLATE)
    send = create_send(
        session, env.settings, runtime.ledger, template=template,
        entries=[Entry(f"c{n}", None) for n in (1, 2, 3)], actor="apikey:a",
    )  # fmt: skip
    session.commit()
    run_to_end(runtime, send.id)
    session.expire_all()
    assert get_send(session, send.id).status == "completed"
    assert env.delivered_numbers() == [1, 2, 3]
    alias = session.scalars(select(Alias.address).limit(1)).first()
    assert alias is not None
    codes = _smtp_session(env, alias)
    env.flush()
    assert codes[1] == 550 and codes[2] == 252, codes
    ran = client.post("/v1/detect/run", headers={"Authorization": f"Bearer {token}"})
    assert ran.status_code == 200, ran.text
    return token


def flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the log file, each of which must be one JSON object."""
    flush_logs()
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:  # pragma: no cover - the assertion's message
            raise AssertionError(f"log line {number} is not JSON: {line[:200]!r}") from exc
        assert isinstance(record, dict), line
        out.append(record)
    return out


__all__ = [
    "NEW_CUSTOMER",
    "STRANGER",
    "drive_slice",
    "flush_logs",
    "json_lines",
    "notify_kit",
    "shared_runtime",
]
