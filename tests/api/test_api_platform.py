"""The platform routes (issue 18): order transitions, the contact reasons a seller may use
now, the events export, response times and the "no response needed" mark."""

from __future__ import annotations

import datetime as dt
import json

from api_testkit import Api
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from mailveil.contacts.models import Order
from mailveil.db.base import utcnow
from mailveil.ledger.events import Event
from mailveil.runtime import Runtime

EMAIL = "Private.Buyer@mailbox.example"


def seeded(admin: Api) -> tuple[int, int, int]:
    customer = admin.customer("c-1", EMAIL)["id"]
    seller = admin.principal("seller", "s-1")["id"]
    order = admin.order("o-1", customer, seller)["id"]
    return customer, seller, order


def test_transitions_move_along_the_order_and_refuse_with_the_next_statuses(
    admin: Api, backend: Api
) -> None:
    _, _, order = seeded(admin)
    moved = backend.ok(
        "post", f"/v1/relationships/orders/{order}/transitions", json={"to": "shipped"}
    )
    assert moved["status"] == "shipped"
    bad = backend.post(f"/v1/relationships/orders/{order}/transitions", json={"to": "paid"})
    assert bad.status_code == 409
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert "next statuses: delivered, returned, closed" in bad.json()["detail"]
    unknown = backend.post(f"/v1/relationships/orders/{order}/transitions", json={"to": "lost"})
    assert unknown.status_code == 422


def test_contact_reasons_follow_the_order_status_and_window(
    admin: Api, session_factory: sessionmaker[Session]
) -> None:
    _, seller, order = seeded(admin)
    seller_api = admin.key_for("seller", seller)
    placed = seller_api.ok("get", f"/v1/relationships/orders/{order}/contact-reasons")
    assert placed["status"] == "placed"
    assert placed["allowed"] == ["legal", "order_question", "refund", "safety_recall", "shipping"]
    why = {r["reason"]: r for r in placed["reasons"]}
    assert why["review_request"]["allowed"] is False
    assert "review_request" in why["review_request"]["why"]
    assert why["safety_recall"]["critical"] is True
    assert placed["conversation"]["open"] is True
    admin.ok("post", f"/v1/relationships/orders/{order}/transitions", json={"to": "shipped"})
    admin.ok("post", f"/v1/relationships/orders/{order}/transitions", json={"to": "delivered"})
    delivered = seller_api.ok("get", f"/v1/relationships/orders/{order}/contact-reasons")
    assert "review_request" in delivered["allowed"]
    assert "order_question" not in delivered["allowed"]
    with session_factory() as session:  # past the return window: nothing is allowed
        session.execute(
            update(Order)
            .where(Order.id == order)
            .values(status_changed_at=utcnow() - dt.timedelta(days=31))
        )
        session.commit()
    ended = seller_api.ok("get", f"/v1/relationships/orders/{order}/contact-reasons")
    assert ended["allowed"] == []
    assert ended["conversation"]["open"] is False
    assert {r["why"] for r in ended["reasons"]} == {
        "the conversation has ended; it reopens when the customer writes"
    }
    # Another seller sees no such order.
    other = admin.key_for("seller", admin.principal("seller", "s-2")["id"])
    assert other.get(f"/v1/relationships/orders/{order}/contact-reasons").status_code == 404
    assert EMAIL.lower() not in json.dumps(ended).lower()


def test_events_export_pages_by_cursor_as_ndjson(
    admin: Api, backend: Api, runtime: Runtime, session_factory: sessionmaker[Session]
) -> None:
    customer, seller, _ = seeded(admin)
    events = [
        Event(kind="message", actor=f"principal:{seller}", subject=f"customer:{customer}",
              alias="a1@relay.example", purpose="to_customer", ref="shipping",
              detail={"principal": f"principal:{seller}", "relay_message": f"tok{i}"})
        for i in range(3)
    ] + [
        Event(kind="message_refused", subject=f"customer:{customer}", purpose="to_customer",
              detail={"principal": f"principal:{seller}", "reply": "550 5.2.1",
                      "stage": "rcpt"}),
        Event(kind="disclosure", subject=f"customer:{customer}"),  # not a message event
        Event(kind="bounce", detail={"kind": "delayed"}),  # a delay is not a bounce
        Event(kind="message_held", subject=f"customer:{customer}",
              detail={"principal": f"principal:{seller}", "by": "veto"}),
    ]  # fmt: skip
    with session_factory() as session:
        runtime.ledger.append(session, events)
        session.commit()
    first = backend.get("/v1/events", params={"limit": 2})
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in first.text.splitlines()]
    assert [e["event"] for e in lines] == ["relayed", "relayed"]
    assert lines[0]["principal_id"] == seller and lines[0]["customer_id"] == customer
    assert "alias" not in lines[0]
    cursor = first.headers["X-Next-Cursor"]
    rest = backend.get("/v1/events", params={"after": cursor, "limit": 10})
    names = [json.loads(line)["event"] for line in rest.text.splitlines()]
    assert names == ["relayed", "refused", "held"]
    assert "X-Next-Cursor" not in rest.headers
    seller_api = admin.key_for("seller", seller)
    assert seller_api.get("/v1/events").status_code == 403


def test_response_times_route_and_the_no_response_needed_mark(
    admin: Api, session_factory: sessionmaker[Session]
) -> None:
    from mailveil.relay.models import RelayMessage

    customer, seller, _ = seeded(admin)
    now = utcnow()
    rows = [  # (token, direction, minutes ago)
        ("in1", "to_principal", 300), ("out1", "to_customer", 240),  # 60 min
        ("in2", "to_principal", 200), ("out2", "to_customer", 190),  # 10 min
        ("in3", "to_principal", 100),  # marked: no response needed
        ("in4", "to_principal", 50),  # not answered yet
    ]  # fmt: skip
    with session_factory() as session:
        for token, direction, ago in rows:
            session.add(
                RelayMessage(
                    token=token,
                    direction=direction,
                    principal_id=seller,
                    customer_id=customer,
                    alias="a@relay.example",
                    message_id=f"<{token}>",
                    size=1,
                    sha256="0" * 64,
                    status="delivered",
                    created_at=now - dt.timedelta(minutes=ago),
                    updated_at=now,
                )
            )
        session.commit()
    seller_api = admin.key_for("seller", seller)
    assert seller_api.post("/v1/relay-messages/out1/no-response-needed").status_code == 403
    assert seller_api.post("/v1/relay-messages/nope/no-response-needed").status_code == 404
    assert seller_api.post("/v1/relay-messages/in3/no-response-needed").status_code == 204
    times = seller_api.ok("get", f"/v1/sellers/{seller}/response-times", params={"days": 1})
    # in4 is not answered yet; in3 is excluded; in1 waited 60 minutes, in2 10 (out2).
    # Nearest rank: p50 of [600, 3600] is 600, p95 is 3600.
    assert times["received"] == 4 and times["excluded"] == 1
    assert times["answered"] == 2 and times["unanswered"] == 1
    assert times["p50_seconds"] == 600 and times["p95_seconds"] == 3600
    other = admin.key_for("seller", admin.principal("seller", "s-2")["id"])
    assert other.get(f"/v1/sellers/{seller}/response-times").status_code == 403
    assert other.post("/v1/relay-messages/in4/no-response-needed").status_code == 404
    metrics = admin.client.get("/metrics").text
    assert f'mailveil_seller_response_seconds{{quantile="0.5",seller="{seller}"}} 600.0' in metrics


def test_console_sellers_page_shows_response_times_without_addresses(
    admin: Api, session_factory: sessionmaker[Session]
) -> None:
    import re

    from mailveil.relay.models import RelayMessage

    customer, seller, _ = seeded(admin)
    now = utcnow()
    with session_factory() as session:
        for token, direction, ago in (("q1", "to_principal", 130), ("a1", "to_customer", 10)):
            session.add(
                RelayMessage(
                    token=token, direction=direction, principal_id=seller, customer_id=customer,
                    alias="a@relay.example", message_id=f"<{token}>", size=1, sha256="0" * 64,
                    status="delivered", created_at=now - dt.timedelta(minutes=ago),
                    updated_at=now,
                )
            )  # fmt: skip
        session.commit()
    client = admin.client
    login = client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
    assert csrf is not None
    signed = client.post(
        "/console/login",
        data={"token": admin.token, "csrf": csrf.group(1), "next": "/console/"},
        follow_redirects=False,
    )
    assert signed.status_code == 303, signed.text
    page = client.get("/console/sellers")
    assert page.status_code == 200
    assert "default-src" in page.headers["content-security-policy"]
    assert "s-1" in page.text and "2 h 00 min" in page.text  # p50 = p95 = 120 minutes
    assert EMAIL.lower() not in page.text.lower() and "@" not in re.sub(r"<[^>]+>", "", page.text)


def test_serve_pushes_new_events_to_the_webhook(
    runtime: Runtime, session_factory: sessionmaker[Session]
) -> None:
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from typing import Any

    from fastapi.testclient import TestClient

    from mailveil.api.app import create_app

    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        runtime.settings = runtime.settings.with_overrides(
            events_url=f"http://127.0.0.1:{server.server_address[1]}/events",
            platform_webhook_secret="serve-events-secret",
            events_push_seconds=0.2,
            checkpoint_every_seconds=3600,
        )
        with session_factory() as session:
            runtime.ledger.append(
                session,
                [
                    Event(
                        kind="message",
                        subject="customer:1",
                        purpose="to_customer",
                        detail={"relay_message": "m1"},
                    )
                ],
            )
            session.commit()
        with TestClient(create_app(runtime, background_checkpoints=True)):
            time.sleep(1.5)  # about seven ticks of the 0.2 s loop
    finally:
        server.shutdown()
        server.server_close()
    assert [e["message"] for b in bodies for e in b["events"]] == ["m1"]  # once, not per tick
