"""The quarantine: files (atomic, private, named by their hash), the warning banner, the
stranger setting, and the operator's release and delete -- through the relay's functions
and through `mailveil quarantine` on a real data directory.
"""

from __future__ import annotations

import email.policy
import hashlib
import json
import re
import smtplib
import stat
from email.message import EmailMessage
from pathlib import Path

import pytest
from process_kit import child_env, seed
from relay_server_kit import STRANGER_ADDRESS, Relay, dns_records, message, parsed, plant_canary
from typer.testing import CliRunner

from mailveil.cli.app import app
from mailveil.config import SettingsError, load_settings
from mailveil.demo.harness import free_port
from mailveil.errors import Conflict, InvalidInput, NotFound
from mailveil.relay import codes, quarantine
from mailveil.relay.compose import BANNER, add_banner
from mailveil.relay.context import RelayContext
from mailveil.relay.release import delete, list_held, release
from mailveil.relay.sender_auth import StaticResolver
from mailveil.relay.server import RelayThread
from mailveil.runtime import Runtime
from smtp_kit import Sink

WARNING = "Warning: heed this"


def said(code: int, text: str) -> str:
    return f"{code} {text}"


# ------------------------------------------------------------------------------ the files


def test_store_is_private_named_by_hash_and_idempotent(tmp_path: Path) -> None:
    data = b"Subject: x\r\n\r\nbody\r\n"
    first = quarantine.store(tmp_path, data)
    again = quarantine.store(tmp_path, data)
    assert first.sha256 == again.sha256 == hashlib.sha256(data).hexdigest()
    folder = quarantine.folder(tmp_path)
    assert [p.name for p in folder.iterdir()] == [first.sha256]  # no temporary file left
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / first.sha256).stat().st_mode) == 0o600
    assert quarantine.read(tmp_path, first.sha256.upper()) == data
    assert [h.sha256 for h in quarantine.held(tmp_path)] == [first.sha256]
    quarantine.remove(tmp_path, first.sha256)
    assert quarantine.held(tmp_path) == []
    with pytest.raises(NotFound):
        quarantine.read(tmp_path, first.sha256)


def test_names_are_hashes_only_and_an_altered_file_is_detected(tmp_path: Path) -> None:
    for bad in ("../../etc/passwd", "a" * 63, "g" * 64, ""):
        with pytest.raises(InvalidInput):
            quarantine.read(tmp_path, bad)
    held = quarantine.store(tmp_path, b"original")
    (quarantine.folder(tmp_path) / held.sha256).write_bytes(b"altered")
    with pytest.raises(InvalidInput, match="does not match"):
        quarantine.read(tmp_path, held.sha256)


def test_the_setting_takes_three_modes_only() -> None:
    for mode in ("quarantine", "refuse", "banner"):
        assert load_settings(env={}, relay_stranger_action=mode).relay_stranger_action == mode
    assert load_settings(env={}).relay_stranger_action == "quarantine"
    with pytest.raises(SettingsError, match="relay_stranger_action"):
        load_settings(env={}, relay_stranger_action="drop")
    with pytest.raises(SettingsError, match="abuse_mailbox_local"):
        load_settings(env={}, abuse_mailbox_local="abuse@elsewhere.example")


# ------------------------------------------------------------------------------ the banner


def _read(msg: EmailMessage) -> EmailMessage:
    return parsed(msg.as_bytes(policy=email.policy.default))


def test_banner_goes_on_inline_text_not_on_attachments_or_attached_messages() -> None:
    msg = EmailMessage()
    msg["From"] = STRANGER_ADDRESS
    msg.set_content("body text\n")
    msg.add_attachment("a text file\n", filename="notes.txt")
    inner = EmailMessage()
    inner["Subject"] = "inner"
    inner.set_content("inner text\n")
    msg.add_attachment(inner)
    assert add_banner(msg, WARNING) == 1
    out = _read(msg)
    parts = list(out.iter_parts())
    assert parts[0].get_content().startswith(f"{WARNING}\n\nbody text")
    assert "MIME-Version" not in parts[0]
    assert parts[1].get_content() == "a text file\n"
    assert WARNING not in parts[2].as_string()


def test_a_message_without_text_gets_a_warning_part_first() -> None:
    msg = EmailMessage()
    msg["From"] = STRANGER_ADDRESS
    msg.set_content(b"%PDF-1.4 ...", maintype="application", subtype="pdf")
    assert add_banner(msg, WARNING) == 1
    out = _read(msg)
    assert out.get_content_type() == "multipart/mixed"
    first, second = out.iter_parts()
    assert first.get_content() == f"{WARNING}\n"
    assert second.get_content_type() == "application/pdf"


def test_html_without_a_body_tag_gets_the_warning_first_escaped() -> None:
    msg = EmailMessage()
    msg.set_content("<p>offer</p>", subtype="html")
    add_banner(msg, "a <b> & c")
    html = msg.get_content()
    assert re.match(r'<p style="[^"]*">a &lt;b&gt; &amp; c</p>\n<p>offer</p>', html)


# ------------------------------------------------------------------ release and delete


def _hold(relay: Relay, subject: str = "Catalogue") -> str:
    alias = relay.world.alias("alice", "acme")
    data = message(
        from_=f"Deals <{STRANGER_ADDRESS}>",
        to=alias,
        subject=subject,
        body=f"Buy now from {STRANGER_ADDRESS}.\n",
    )
    code, text = relay.send(data, mail_from=STRANGER_ADDRESS, rcpt=alias)
    assert said(code, text) == str(codes.QUARANTINED)
    return hashlib.sha256(data).hexdigest()


def test_release_delivers_with_the_warning_ledgered_and_removes_the_file(relay: Relay) -> None:
    w = relay.world
    sha = _hold(relay)
    relay.server.flush()
    with relay.session_factory() as session:
        [entry] = list_held(session, relay.settings)
        assert (entry.held.sha256, entry.kind, entry.alias) == (
            sha,
            "stranger_at_alias",
            w.alias("alice", "acme"),
        )
        token = release(session, relay.server.ctx, sha, actor="operator:test")
    [got] = relay.delivered()
    assert got.rcpt_tos == (w.real["alice"],)
    out = parsed(got.data)
    assert out["From"].addresses[0].addr_spec == w.reverse("alice", "acme")
    body = out.get_body(("plain",))
    assert body is not None
    assert body.get_content().startswith(BANNER.format(name="Acme Books"))
    assert STRANGER_ADDRESS not in got.data.decode()  # the stranger's address is hidden too
    [released] = relay.ledger("quarantine_released")
    assert released["actor"] == "operator:test"
    assert (released["detail"]["sha256"], released["detail"]["relay_message"]) == (sha, token)
    [sent] = relay.ledger("message")
    assert (sent["detail"]["relay_message"], sent["detail"]["released"]) == (token, sha)
    assert [m.status for m in relay.relay_messages()] == ["delivered"]
    assert quarantine.held(relay.settings.data_dir) == []
    with relay.session_factory() as session, pytest.raises(NotFound):
        release(session, relay.server.ctx, sha, actor="operator:test")


def test_delete_is_ledgered_and_a_canary_message_cannot_be_released(relay: Relay) -> None:
    sha = _hold(relay)
    relay.server.flush()
    with relay.session_factory() as session:
        delete(session, relay.settings, relay.runtime.ledger, sha, actor="operator:test")
    [deleted] = relay.ledger("quarantine_deleted")
    assert deleted["detail"]["sha256"] == sha
    assert deleted["subject"] == f"customer:{relay.world.customers['alice'].id}"
    assert quarantine.held(relay.settings.data_dir) == []
    # A canary's message has nobody to go to.
    _cid, real = plant_canary(relay)
    data = message(from_=STRANGER_ADDRESS, to=real)
    code, text = relay.send(data, mail_from=STRANGER_ADDRESS, rcpt=real)
    assert said(code, text) == str(codes.QUEUED)
    relay.server.flush()
    with relay.session_factory() as session, pytest.raises(Conflict):
        release(session, relay.server.ctx, hashlib.sha256(data).hexdigest(), actor="op")
    assert relay.delivered() == []


# ----------------------------------------------------------------------------- the CLI


def test_quarantine_commands_on_a_real_data_directory(tmp_path: Path) -> None:
    seeded = seed(tmp_path / "var")
    with Sink(port=free_port()) as sink:
        env = {
            **child_env(),
            "MAILVEIL_SMARTHOST_PORT": str(sink.port),
            "MAILVEIL_SMARTHOST_HOST": "127.0.0.1",
        }
        settings = load_settings(
            env={}, data_dir=seeded.data, smarthost_port=sink.port, relay_port=0
        )
        runtime = Runtime.open(settings)
        server = RelayThread(RelayContext.load(runtime, resolver=StaticResolver(dns_records())))
        server.start()
        try:
            datas = [
                message(from_=STRANGER_ADDRESS, to=seeded.alias, subject=f"Offer {n}")
                for n in (1, 2)
            ]
            for data in datas:
                with smtplib.SMTP("127.0.0.1", server.port) as client:
                    client.sendmail(STRANGER_ADDRESS, [seeded.alias], data)
            server.flush()
        finally:
            server.stop()
            runtime.engine.dispose()
        shas = [hashlib.sha256(d).hexdigest() for d in datas]

        def run(*args: str) -> str:
            result = CliRunner().invoke(app, ["--data-dir", str(seeded.data), *args], env=env)
            assert result.exit_code == 0, result.output
            return result.output

        listed = run("quarantine", "list")
        assert all(sha in listed for sha in shas)  # whole, never cut (issue 14)
        rows = json.loads(run("quarantine", "list", "--json"))
        assert sorted(r["sha256"] for r in rows) == sorted(shas)
        assert all(r["kind"] == "stranger_at_alias" for r in rows)
        # A unique prefix names a message; a short or unmatched one is refused in words.
        view = json.loads(run("quarantine", "show", shas[0][:10]))
        assert view["sha256"] == shas[0]
        missing = next(p for p in ("0" * 9, "f" * 9) if not any(h.startswith(p) for h in shas))
        for prefix, words in (("abc", "8+ hex digits"), (missing, "starts with")):
            refused = CliRunner().invoke(
                app, ["--data-dir", str(seeded.data), "quarantine", "show", prefix], env=env
            )
            assert refused.exit_code == 1 and words in refused.output, refused.output
        view = json.loads(run("quarantine", "show", shas[0]))
        assert (view["sha256"], view["kind"], view["alias"]) == (
            shas[0],
            "stranger_at_alias",
            seeded.alias,
        )
        assert view["envelope_from"] == STRANGER_ADDRESS
        raw = CliRunner().invoke(
            app, ["--data-dir", str(seeded.data), "quarantine", "show", "--raw", shas[0]], env=env
        )
        assert raw.exit_code == 0 and raw.stdout_bytes == datas[0]
        assert "released" in run("quarantine", "release", shas[0])
        [got] = sink.messages
        body = parsed(got.data).get_body(("plain",))
        assert body is not None and body.get_content().startswith(BANNER.format(name="Shop"))
        assert "deleted" in run("quarantine", "delete", "--yes", shas[1])
        assert "empty" in run("quarantine", "list")
        bad = CliRunner().invoke(
            app, ["--data-dir", str(seeded.data), "quarantine", "release", "../x"], env=env
        )
        assert bad.exit_code == 1 and "error:" in bad.output
