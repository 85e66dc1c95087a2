"""One send, several languages: each recipient gets the translation their audience entry
names (the template's own language when it names none), through the real relay into the
sink; the preview counts recipients per language; a language the template lacks is refused
(RFC 9457 problem), never swapped for another; a segment gets the template's own language."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from types import SimpleNamespace
from typing import Any

import notify_kit as kit
import pytest
from fastapi.testclient import TestClient
from notify_kit import GIFT_TEMPLATE, NotifyEnv, add_facts, gift_facts
from sqlalchemy import func, select

from mailveil.api.app import create_app
from mailveil.auth.keys import Role, issue_key
from mailveil.errors import InvalidInput
from mailveil.notify.audience import Entry
from mailveil.notify.models import Recipient, Send
from mailveil.notify.queue import run_to_end
from mailveil.notify.sends import create_send, get_send
from mailveil.notify.templates import get_template, render
from mailveil.notify.transmit import WIRE, Ready, build_message, message_bytes

GERMAN = {
    "subject": "Jemand hat ein Geschenk aus Ihrer Liste gekauft",
    "body": "Hallo,\n\njemand hat {{ facts.gift.item }} für die Liste "
    "{{ facts.gift.registry_id }} gekauft.\n\nViele Grüße\n",
}
TEMPLATE = {**GIFT_TEMPLATE, "translations": {"de": GERMAN}}
GERMANS, ENGLISH, UNNAMED = (1, 2, 3), (4, 5), (6, 7)


def _client(env: NotifyEnv) -> tuple[TestClient, dict[str, str]]:
    session = env.session()
    token = issue_key(session, Role.BACKEND, label="backend").token
    session.commit()
    client = TestClient(create_app(env.runtime), raise_server_exceptions=False)
    return client, {"Authorization": f"Bearer {token}"}


def _entry(n: int) -> dict[str, Any]:
    if n in GERMANS:
        return {"customer": f"c{n}", "language": "de"}
    if n in ENGLISH:
        return {"customer": f"c{n}", "language": "en"}
    return {"customer": f"c{n}"}


def _received(env: NotifyEnv) -> dict[int, list[tuple[str, str, str]]]:
    """Customer number: (Content-Language, subject, plain body) of each message the sink got
    for them."""
    by_address = {kit.address(n).lower(): n for n in env.customers}
    out: dict[int, list[tuple[str, str]]] = {}
    with env.sink.lock:
        messages = list(env.sink.messages)
    for rcpt, data in messages:
        msg = message_from_bytes(data, policy=default_policy)
        assert isinstance(msg, EmailMessage)
        part = msg.get_body(preferencelist=("plain",))
        assert part is not None
        body = str(part.get_content()).replace("\r\n", "\n")
        said = str(msg["Content-Language"])
        out.setdefault(by_address[rcpt], []).append((said, str(msg["Subject"]), body))
    return out


def test_each_recipient_gets_their_language_through_the_relay(notify_env: NotifyEnv) -> None:
    env = notify_env
    everyone = [*GERMANS, *ENGLISH, *UNNAMED]
    add_facts(env.session(), gift_facts(everyone))
    client, headers = _client(env)
    with client:
        made = client.post("/v1/templates", json=TEMPLATE, headers=headers)
        assert made.status_code == 201, made.text
        got = made.json()
        # Lint-clean in each language: English checked as English, German as German.
        assert got["findings"] == [] and got["sendable"], got["findings"]
        assert got["language"] == "en" and set(got["translations"]) == {"de"}

        body = {"template": TEMPLATE["name"],
                "audience": {"customers": [_entry(n) for n in everyone]}}  # fmt: skip
        seen = client.post("/v1/sends?preview=true", json=body, headers=headers)
        assert seen.status_code == 200, seen.text
        preview = seen.json()
        assert preview["counts"]["eligible"] == len(everyone)
        # How many get each language (unnamed ones get the template's own, English).
        assert preview["languages"] == {"de": 3, "en": 4}
        samples = {s["language"]: s for s in preview["rendered"]}
        assert samples["de"]["subject"] == GERMAN["subject"]
        assert "für die Liste" in samples["de"]["body"]
        assert samples["en"]["subject"] == GIFT_TEMPLATE["subject"]

        created = client.post("/v1/sends", json=body, headers=headers)
        assert created.status_code == 201, created.text
        send = created.json()
        assert send["status"] == "ready", send
    run_to_end(env.runtime, send["id"])
    env.flush()
    session = env.session()
    assert get_send(session, send["id"]).status == "completed"
    received = _received(env)
    assert sorted(received) == everyone
    for n in everyone:
        [(said, subject, text)] = received[n]  # exactly one message each
        assert said == ("de" if n in GERMANS else "en"), n  # and it says which (RFC 3282)
        if n in GERMANS:
            assert subject == GERMAN["subject"], n
            assert text.startswith("Hallo,\n\njemand hat a teddy bear für die Liste "
                                   f"R{n} gekauft."), (n, text)  # fmt: skip
            assert "Hello" not in text and "someone bought" not in text
        else:
            assert subject == GIFT_TEMPLATE["subject"], n
            assert text.startswith(f"Hello,\n\nsomeone bought a teddy bear from your registry "
                                   f"R{n}."), (n, text)  # fmt: skip
            assert "Hallo" not in text and "gekauft" not in text


def test_a_language_the_template_lacks_is_refused_not_swapped(notify_env: NotifyEnv) -> None:
    env = notify_env
    add_facts(env.session(), gift_facts([1, 2]))
    client, headers = _client(env)
    with client:
        assert client.post("/v1/templates", json=TEMPLATE, headers=headers).json()["sendable"]
        audience = {"customers": [{"customer": "c1", "language": "de"},
                                  {"customer": "c2", "language": "fr"}]}  # fmt: skip
        body = {"template": TEMPLATE["name"], "audience": audience}
        for path in ("/v1/sends?preview=true", "/v1/sends"):
            r = client.post(path, json=body, headers=headers)
            assert r.status_code == 422, (path, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            problem = r.json()
            assert problem["type"].endswith("invalid-input"), problem
            detail = problem["detail"]
            assert "audience entry 2" in detail and "'c2'" in detail, detail
            assert "'fr'" in detail and "written in de, en" in detail, detail
        # The NDJSON upload refuses it too (its line streamed into the send).
        lines = '{"customer": "c1", "language": "de"}\n{"customer": "c2", "language": "fr"}\n'
        r = client.post(f"/v1/sends/ndjson?template={TEMPLATE['name']}", content=lines,
                        headers={**headers, "Content-Type": "application/x-ndjson"})  # fmt: skip
        assert r.status_code == 422 and "'fr'" in r.json()["detail"], r.text
    session = env.session()
    # Nothing was stored or sent: not c1 in German, not c2 in anything.
    assert session.scalar(select(func.count()).select_from(Send)) == 0
    env.flush()
    assert env.sink.recipients() == []
    # The Python entry point says the same.
    template = get_template(session, TEMPLATE["name"])
    with pytest.raises(InvalidInput, match="'fr'"):
        create_send(session, env.settings, env.runtime.ledger, template=template,
                    entries=[Entry("c1", None, "fr")], actor="apikey:a")  # fmt: skip
    session.rollback()
    # And rendering never falls back to another language for a language it lacks.
    with pytest.raises(InvalidInput, match="no translation 'fr'"):
        render(template, {}, "fr")


def test_a_segment_gets_the_template_s_own_language(notify_env: NotifyEnv) -> None:
    """A fact-query audience names no language: every recipient gets the template's own.
    (To send a translation to a segment, list its customers with their language.)"""
    env = notify_env
    add_facts(env.session(), gift_facts([1, 2, 3]))
    client, headers = _client(env)
    with client:
        assert client.post("/v1/templates", json=TEMPLATE, headers=headers).json()["sendable"]
        query = {"kind": "registry.gift_purchased"}
        body = {"template": TEMPLATE["name"], "audience": {"query": query}}
        preview = client.post("/v1/sends?preview=true", json=body, headers=headers).json()
    assert preview["audience_source"] == "segment" and preview["counts"]["eligible"] == 3
    assert preview["languages"] == {"en": 3}
    session = env.session()
    assert session.scalar(select(func.count()).select_from(Recipient)) == 0


def test_content_language_is_written_alike_on_both_paths() -> None:
    """``message_bytes`` writes a plain message itself: with a Content-Language too it gives
    exactly EmailMessage's bytes (German text, not ASCII, goes through EmailMessage)."""
    # Plain data holders for the attributes a message reads (no behaviour stubbed).
    runtime = SimpleNamespace(settings=SimpleNamespace(relay_domain="relay.example"))
    send, template = SimpleNamespace(id=7), SimpleNamespace(reason="notification")
    url = "https://relay.example/unsubscribe/7/1/abcdef"
    for language, subject, body in (
        ("en", GIFT_TEMPLATE["subject"], "Hello,\n\nsomeone bought a teddy bear.\n"),
        ("de", GERMAN["subject"], "Hallo,\n\njemand hat einen Teddy für R1 gekauft.\n"),
        ("", "s", "b\n"),
    ):
        item = Ready(1, 2, "ab12.cd@relay.example", subject, body, [], url, language)
        want = build_message(runtime, send, template, item).as_bytes(policy=WIRE)
        assert message_bytes(runtime, send, template, item) == want
        assert (b"Content-Language: " + language.encode() in want) == bool(language)
