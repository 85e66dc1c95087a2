"""One-click unsubscribe (RFC 8058) and complaints, end to end: a send goes through the real
relay into the sink; each delivered notification carries List-Unsubscribe and
List-Unsubscribe-Post, signed by the relay's DKIM; POSTing the link (as a mailbox provider
does) suppresses the customer and feeds the send's unsubscribe gate, which halts the next
stage; an ARF complaint mailed to the relay's abuse mailbox feeds the complaint gate."""

from __future__ import annotations

import email
import email.policy
import smtplib
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from urllib.parse import urlsplit

import notify_kit as kit
import pytest
from fastapi.testclient import TestClient
from notify_kit import GIFT_TEMPLATE, NotifyEnv, add_facts, gift_facts, register
from sqlalchemy import select

from mailveil.api.app import create_app
from mailveil.notify.audience import Entry
from mailveil.notify.models import Fact, Suppression
from mailveil.notify.queue import run_to_end
from mailveil.notify.sends import counts_of, create_send, get_send

CUSTOMERS = 40


@pytest.fixture
def env(settings: kit.Settings, notify_db: kit.sessionmaker[kit.Session]) -> Iterator[NotifyEnv]:
    tuned = kit.notify_settings(
        settings,
        notify_stages="0.5,1",
        notify_soak_seconds=10.0,  # feedback on stage 1 arrives while it soaks
        notify_max_unsubscribe_rate=0.05,
        notify_max_complaint_rate=0.05,
    )
    yield from kit.open_env(tuned, notify_db, CUSTOMERS)


def _start(env: NotifyEnv) -> tuple[int, threading.Thread]:
    session = env.session()
    add_facts(session, gift_facts(list(range(1, CUSTOMERS + 1))))
    template = register(session, env, GIFT_TEMPLATE, expected_volume=CUSTOMERS)
    send = create_send(session, env.settings, env.runtime.ledger, template=template,
                       entries=[Entry(f"c{n}", None) for n in range(1, CUSTOMERS + 1)],
                       actor="apikey:test")  # fmt: skip
    session.commit()
    worker = threading.Thread(target=run_to_end, args=(env.runtime, send.id), daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while len(env.sink.messages) < CUSTOMERS // 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(env.sink.messages) == CUSTOMERS // 2, "stage 1 not delivered"
    return send.id, worker


def _delivered(env: NotifyEnv) -> list[EmailMessage]:
    out = []
    for _rcpt, data in list(env.sink.messages):
        msg = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        out.append(msg)
    return out


def _halt(env: NotifyEnv, send_id: int, worker: threading.Thread) -> str:
    worker.join(60)
    assert not worker.is_alive()
    with env.session_factory() as s:
        send = get_send(s, send_id)
        assert send.status == "halted" and send.stage == 0, (send.status, send.halt_reason)
        return send.halt_reason or ""


def test_one_click_unsubscribe_suppresses_and_halts_the_send(env: NotifyEnv) -> None:
    send_id, worker = _start(env)
    mails = _delivered(env)
    links = []
    for msg in mails:
        link = str(msg["List-Unsubscribe"])
        assert link.startswith(f"<https://{env.settings.relay_domain}/unsubscribe/"), link
        assert str(msg["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
        signed = str(msg["DKIM-Signature"]).replace(" ", "").replace("\r\n", "").lower()
        assert "list-unsubscribe:list-unsubscribe-post" in signed  # covered by the signature
        links.append(urlsplit(link.strip("<>")).path)
    assert len(set(links)) == len(links)  # one link per recipient
    with TestClient(create_app(env.runtime), raise_server_exceptions=False) as client:
        page = client.get(links[0])
        assert page.status_code == 200 and '<form method="post">' in page.text
        forged = links[0][:-4] + ("aaaa" if not links[0].endswith("aaaa") else "bbbb")
        assert client.post(forged, content="List-Unsubscribe=One-Click").status_code == 404
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        for path in links[:2]:  # two of twenty: 10 %, above the 5 % gate
            r = client.post(path, content="List-Unsubscribe=One-Click", headers=form)
            assert r.status_code == 200 and r.json()["scope"] == "list:baby-registry", r.text
        again = client.post(links[0], content="List-Unsubscribe=One-Click")
        assert again.status_code == 200  # repeating changes nothing
    assert "unsubscribe rate 0.1000 above 0.05" in _halt(env, send_id, worker)
    with env.session_factory() as s:
        scopes = s.scalars(select(Suppression.scope)).all()
        facts = s.scalars(select(Fact.attributes).where(Fact.kind == "notify.unsubscribe")).all()
        assert counts_of(s, send_id) == {"delivered": 20, "pending": 20}
    assert scopes == ["list:baby-registry"] * 2
    assert facts == [{"send": send_id}] * 2
    assert len(env.sink.messages) == CUSTOMERS // 2  # nobody after the halt


def _arf(original: bytes, reporter: str, abuse: str) -> bytes:
    """A mailbox provider's feedback report (RFC 5965) carrying the delivered message."""
    fields = ("Feedback-Type: abuse\r\nUser-Agent: FBL/1.0\r\nVersion: 1\r\n"
              f"Original-Rcpt-To: <{reporter}>\r\n")  # fmt: skip
    return (
        f"From: fbl@mailbox.example\r\nTo: {abuse}\r\nSubject: FBL report\r\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
        f"--B\r\nContent-Type: message/feedback-report\r\n\r\n{fields}\r\n"
        "--B\r\nContent-Type: message/rfc822\r\n\r\n"
        + original.decode("utf-8", "replace")
        + "\r\n--B--\r\n"
    ).encode()


def test_arf_complaints_at_the_abuse_mailbox_halt_the_send(env: NotifyEnv) -> None:
    send_id, worker = _start(env)
    abuse = f"{env.settings.abuse_mailbox_local}@{env.settings.relay_domain}"
    assert env.relay is not None
    for rcpt, data in list(env.sink.messages)[:2]:
        with smtplib.SMTP("127.0.0.1", env.relay.port, timeout=10) as smtp:
            smtp.sendmail("fbl@mailbox.example", [abuse], _arf(data, rcpt, abuse))
    assert "complaint rate 0.1000 above 0.05" in _halt(env, send_id, worker)
    with env.session_factory() as s:
        facts = s.scalars(select(Fact.attributes).where(Fact.kind == "notify.complaint")).all()
        scopes = s.scalars(select(Suppression.scope)).all()
    assert sorted(f["send"] for f in facts) == [send_id, send_id]
    assert scopes == ["list:baby-registry"] * 2
