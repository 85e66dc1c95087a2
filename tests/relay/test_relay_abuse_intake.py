"""The abuse mailbox takes every report, through the real relay on SQLite and PostgreSQL:

* when DNS cannot answer for the reporter, the report is kept pending with its reason (never
  counted unverified, never refused), re-checked by ``process_spool`` once DNS answers, and
  judged unverified only after ``report_pending_hours``;
* when the database is busy, reporters on parallel connections wait and are all taken; when it
  stays busy past ``abuse_db_wait_seconds`` the reports are queued in the spool, answered
  with a ``Q-`` reference, and stored once the database answers;
* every failure is logged with its cause and never with an address.
"""

from __future__ import annotations

import email.policy
import json
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import relay_server_kit as kit
from fastapi.testclient import TestClient
from relay_server_kit import SECRET_DOMAIN, STRANGER_ADDRESS, Relay
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from mailveil.api.app import create_app
from mailveil.config import Settings, load_settings
from mailveil.db.session import make_engine
from mailveil.detect.models import AbuseReport
from mailveil.relay import report_spool
from mailveil.relay.abuse_intake import Kit, process_spool
from mailveil.relay.sender_auth import DnsTemporaryError, StaticResolver


class Outage:
    """The static resolver, except that while ``down`` every question about ``domain`` (and
    its subdomains) times out."""

    def __init__(self, inner: StaticResolver, domain: str) -> None:
        self.inner, self.domain, self.down = inner, domain, True

    def _ask(self, name: str) -> None:
        name = name.lower().rstrip(".")
        if self.down and (name == self.domain or name.endswith("." + self.domain)):
            raise DnsTemporaryError("timeout")

    def txt(self, name: str) -> list[str]:
        self._ask(name)
        return self.inner.txt(name)

    def a(self, name: str) -> list[str]:
        self._ask(name)
        return self.inner.a(name)

    def aaaa(self, name: str) -> list[str]:
        self._ask(name)
        return self.inner.aaaa(name)

    def mx(self, name: str) -> list[tuple[int, str]]:
        self._ask(name)
        return self.inner.mx(name)

    def ptr(self, name: str) -> list[str]:
        self._ask(name)
        return self.inner.ptr(name)


def report(relay: Relay, customer: str = "alice", n: int = 0) -> bytes:
    spam = EmailMessage()
    spam["From"] = STRANGER_ADDRESS
    spam["To"] = relay.world.alias(customer, "acme")
    spam["Subject"] = f"Cheap watches {n}"
    spam.set_content("Buy now.\n")
    wrapper = EmailMessage()
    wrapper["From"] = relay.world.real[customer]
    wrapper["To"] = abuse(relay)
    wrapper["Subject"] = "Fwd: spam"
    wrapper.set_content("Spam to my alias.\n")
    wrapper.add_attachment(spam)
    return wrapper.as_bytes(policy=email.policy.SMTP)


def reference(code: int, reply: str) -> int:
    """The report id of a receipt (never a refusal: a 4xx would send the reporter away)."""
    match = re.fullmatch(r"2\.0\.0 Report received, thank you \(reference R-(\d+)\)", reply)
    assert code == 250 and match is not None, (code, reply)
    return int(match.group(1))


def abuse(relay: Relay) -> str:
    return f"{relay.settings.abuse_mailbox_local}@{relay.settings.relay_domain}"


def no_address_logged(caplog: pytest.LogCaptureFixture, relay: Relay) -> None:
    for record in caplog.records:
        message = record.getMessage().lower()
        for address in relay.world.customer_addresses:
            assert address.lower() not in message


# -------------------------------------------------------------------- DNS that does not answer


@pytest.fixture
def outage_relay(
    relay_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[tuple[Relay, Outage]]:
    outages: list[Outage] = []

    def wrap(inner: StaticResolver) -> Outage:
        outages.append(Outage(inner, SECRET_DOMAIN))
        return outages[0]

    for relay in kit.logged_relay(
        relay_settings, session_factory, tmp_path, caplog, resolver_wrap=wrap
    ):
        yield relay, outages[0]


def test_a_report_dns_cannot_check_is_kept_pending_rechecked_and_listed(
    outage_relay: tuple[Relay, Outage],
) -> None:
    relay, outage = outage_relay
    sent = report(relay)
    code, reply = relay.send(sent, mail_from=relay.world.real["alice"], rcpt=abuse(relay))
    rid = reference(code, reply)
    relay.server.flush()
    with relay.session_factory() as session:
        row = session.get(AbuseReport, rid)
        assert row is not None
        assert (row.outcome, row.verification, row.verified) == ("pending", "pending-dns", False)
        assert row.reason == (
            "the sender could not be checked yet: DNS did not answer for "
            f"SPF for {SECRET_DOMAIN}, DMARC for {SECRET_DOMAIN}"
        )
    [kept] = report_spool.spooled(relay.settings.data_dir)
    assert (kept.report_id, kept.raw) == (rid, sent)  # byte for byte, to be checked again
    path = report_spool.folder(relay.settings.data_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE((path / kept.name).stat().st_mode) == 0o600
    with TestClient(create_app(relay.runtime), raise_server_exceptions=False) as client:
        auth = {"Authorization": f"Bearer {relay.world.keys['admin']}"}
        listed = client.get("/v1/reports", params={"outcome": "pending"}, headers=auth).json()
        assert [(r["id"], r["verification"]) for r in listed["items"]] == [(rid, "pending-dns")]
        assert "DNS did not answer" in listed["items"][0]["reason"]
    runtime = relay.runtime
    spool_kit = Kit(relay.settings, runtime.ledger, runtime.vault, relay.verp_key)
    # Still down: checked again, still pending, counted.
    run = process_spool(relay.session_factory, kit=spool_kit, resolver=outage)
    assert (run.still_pending, run.decided) == (1, 0)
    outage.down = False
    run = process_spool(relay.session_factory, kit=spool_kit, resolver=outage)
    assert (run.decided, run.still_pending, run.reports) == (1, 0, [rid])
    with relay.session_factory() as session:
        row = session.get(AbuseReport, rid)
        assert row is not None
        assert (row.verified, row.verification, row.checks) == (True, "dmarc-aligned", 2)
        assert row.outcome == "unconfirmed"  # the spam never crossed the relay
    assert report_spool.names(relay.settings.data_dir) == []
    [pending, final] = relay.ledger("abuse_report")
    assert (pending["detail"]["outcome"], final["detail"]["outcome"]) == ("pending", "unconfirmed")
    assert final["detail"]["rechecked"] == 2


def test_a_report_dns_never_answers_for_is_judged_unverified_with_its_reason(
    outage_relay: tuple[Relay, Outage],
) -> None:
    relay, outage = outage_relay
    code, reply = relay.send(report(relay), mail_from=relay.world.real["alice"], rcpt=abuse(relay))
    rid = reference(code, reply)
    relay.server.flush()
    runtime = relay.runtime
    spool_kit = Kit(relay.settings, runtime.ledger, runtime.vault, relay.verp_key)
    later = datetime.now(UTC) + timedelta(hours=relay.settings.report_pending_hours + 1)
    run = process_spool(relay.session_factory, kit=spool_kit, resolver=outage, now=later)
    assert (run.expired, run.decided) == (1, 0)
    with relay.session_factory() as session:
        row = session.get(AbuseReport, rid)
        assert row is not None
        assert (row.outcome, row.verification) == ("unverified", "dns-unanswered")
        assert row.reason is not None and "would have been" in row.reason
    assert report_spool.names(relay.settings.data_dir) == []


# ------------------------------------------------------------------------ a busy database


@pytest.fixture
def busy_engine(own_engine: Engine) -> Iterator[Engine]:
    """A private database whose relay connections give up on a lock after 0.2 s (so a
    held lock becomes the errors a busy database gives, quickly)."""
    url = own_engine.url.render_as_string(hide_password=False)
    if own_engine.dialect.name == "sqlite":
        engine = make_engine(url=url)

        @event.listens_for(engine, "connect")
        def _short(dbapi: Any, _record: Any) -> None:
            dbapi.execute("PRAGMA busy_timeout=200")

    else:
        # The private schema's search_path, and a lock wait the test can outlast.
        with own_engine.connect() as conn:
            schema = conn.execute(text("SHOW search_path")).scalar_one()
        options = f"-csearch_path={schema} -c lock_timeout=200"
        engine = make_engine(url=url, connect_args={"options": options})
    yield engine
    engine.dispose()


@contextmanager
def locked(engine: Engine, seconds: float) -> Iterator[threading.Thread]:
    """Another client holds the database's write lock (SQLite) or the ledger head (PostgreSQL)
    for ``seconds``, in a thread, while the block runs."""
    started = threading.Event()

    def hold() -> None:
        if engine.dialect.name == "sqlite":
            assert engine.url.database is not None
            conn = sqlite3.connect(engine.url.database, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            started.set()
            time.sleep(seconds)
            conn.execute("ROLLBACK")
            conn.close()
            return
        with engine.connect() as conn:
            conn.execute(text("SET lock_timeout = 0"))
            conn.execute(text("LOCK TABLE ledger_head IN ACCESS EXCLUSIVE MODE"))
            started.set()
            time.sleep(seconds)
            conn.rollback()

    thread = threading.Thread(target=hold)
    thread.start()
    assert started.wait(10)
    try:
        yield thread
    finally:
        thread.join()


def busy_relay(
    settings: Settings, engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture, **kw: Any
) -> Iterator[Relay]:
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    yield from kit.logged_relay(settings, factory, tmp_path, caplog, **kw)


def send_all(relay: Relay, count: int, parallel: int) -> list[tuple[int, str]]:
    data = [report(relay, n=n) for n in range(count)]
    sender = relay.world.real["alice"]
    with ThreadPoolExecutor(parallel) as pool:
        return list(
            pool.map(lambda raw: relay.send(raw, mail_from=sender, rcpt=abuse(relay)), data)
        )


def stored(relay: Relay) -> int:
    with relay.session_factory() as session:
        return len(session.scalars(select(AbuseReport.id)).all())


def test_reporters_on_parallel_connections_wait_for_a_busy_database(
    relay_settings: Settings,
    busy_engine: Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for relay in busy_relay(
        relay_settings, busy_engine, tmp_path, caplog, abuse_db_wait_seconds=30.0
    ):
        with locked(busy_engine, 1.5):
            replies = send_all(relay, 24, 16)
        assert {code for code, _ in replies} == {250}
        assert all(re.search(r"reference R-\d+\)$", reply) for _, reply in replies)
        assert stored(relay) == 24
        waits = [
            r.getMessage() for r in caplog.records if "waits for the database" in r.getMessage()
        ]
        assert waits and all("OperationalError" in w for w in waits)
        no_address_logged(caplog, relay)


def test_reports_the_database_cannot_take_in_time_are_queued_then_stored(
    relay_settings: Settings,
    busy_engine: Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for relay in busy_relay(
        relay_settings, busy_engine, tmp_path, caplog, abuse_db_wait_seconds=0.3
    ):
        with locked(busy_engine, 3.0):
            replies = send_all(relay, 8, 8)
        assert {code for code, _ in replies} == {250}
        queued = [reply for _, reply in replies if "reference Q-" in reply]
        assert queued, replies
        assert len(report_spool.names(relay.settings.data_dir)) == len(queued)
        # The next report finds the database back and the relay drains the spool after it.
        code, _ = relay.send(report(relay), mail_from=relay.world.real["alice"], rcpt=abuse(relay))
        assert code == 250
        deadline = time.monotonic() + 20
        while report_spool.names(relay.settings.data_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert report_spool.names(relay.settings.data_dir) == []
        assert stored(relay) == 9
        causes = [r.getMessage() for r in caplog.records if "queued as Q-" in r.getMessage()]
        assert len(causes) == len(queued) and all("OperationalError" in c for c in causes)
        no_address_logged(caplog, relay)


# ------------------------------------------------------- the operator's resolver, from the CLI


def test_reports_recheck_asks_the_resolver_the_operator_names(tmp_path: Path) -> None:
    """`mailveil reports recheck` with ``dns_nameservers`` pointing at a DNS server on
    loopback: silent for the reporter's domain, the report stays pending; answering, it is
    decided. The spool keeps it until then."""
    from sender_auth_kit import LoopbackDns
    from typer.testing import CliRunner

    from mailveil.cli.app import app
    from mailveil.contacts.customers import create_customer
    from mailveil.db.session import make_session_factory
    from mailveil.detect.reports import MailboxAuth, submit_report
    from mailveil.ledger.append import Ledger
    from mailveil.vault import Vault

    data = tmp_path / "var"
    runner = CliRunner()

    def cli(*args: str, env: dict[str, str] | None = None) -> Any:
        result = runner.invoke(app, ["--data-dir", str(data), *args], env={**(env or {})})
        assert result.exception is None or isinstance(result.exception, SystemExit), result
        return result

    assert cli("init").exit_code == 0
    settings = load_settings(env={}, data_dir=data)
    reporter = f"jo@{SECRET_DOMAIN}"
    raw = (
        f"From: {reporter}\r\nTo: report-abuse@{settings.relay_domain}\r\nSubject: spam\r\n"
        "\r\nI got spam.\r\n"
    ).encode()
    engine = make_engine(settings)
    with make_session_factory(engine)() as session:
        create_customer(session, Vault.open(settings), external_id="c-1", email=reporter,
                        country="DE")  # fmt: skip
        out = submit_report(
            session, settings=settings, ledger=Ledger.load(settings),
            vault=Vault.open(settings), raw=raw, channel="mailbox",
            mailbox=MailboxAuth(reporter, False, pending="DNS did not answer for SPF"),
        )  # fmt: skip
        session.commit()
    engine.dispose()
    envelope = {"mail_from": reporter, "client_ip": "127.0.0.1", "helo": "client.example",
                "received_at": datetime.now(UTC).isoformat(), "reporter": reporter,
                "dmarc_pass": False, "pending": "DNS", "report_id": out.report_id}  # fmt: skip
    report_spool.put(data, raw, envelope)
    zone = {
        (SECRET_DOMAIN, "TXT"): ["v=spf1 ip4:127.0.0.0/8 -all"],
        (f"_dmarc.{SECRET_DOMAIN}", "TXT"): ["v=DMARC1; p=reject"],
    }
    silent = frozenset({SECRET_DOMAIN, f"_dmarc.{SECRET_DOMAIN}"})
    with LoopbackDns(zone, silent=silent) as dns:
        env = {"MAILVEIL_DNS_NAMESERVERS": f"127.0.0.1:{dns.port}",
               "MAILVEIL_DNS_TIMEOUT_SECONDS": "0.3"}  # fmt: skip
        first = cli("reports", "recheck", env=env)
        assert first.exit_code == 0 and "1 still pending" in first.stdout, first.stdout
        listed = cli("reports", "list", "--outcome", "pending", "--json")
        assert ["DNS did not answer" in r["reason"] for r in json.loads(listed.stdout)] == [True]
    with LoopbackDns(zone) as dns:
        env = {"MAILVEIL_DNS_NAMESERVERS": f"127.0.0.1:{dns.port}"}
        second = cli("reports", "recheck", env=env)
        assert second.exit_code == 0 and "1 decided" in second.stdout, second.stdout
    shown = cli("reports", "show", str(out.report_id))
    assert '"verification": "dmarc-aligned"' in shown.stdout and '"checks": 2' in shown.stdout
    assert report_spool.names(data) == []
    assert reporter not in shown.stdout + listed.stdout
    bad = cli("reports", "recheck", env={"MAILVEIL_DNS_NAMESERVERS": "not-an-ip"})
    assert bad.exit_code == 2 and "dns_nameservers" in bad.output


def test_a_spooled_report_set_aside_leaves_the_queue_but_is_kept(tmp_path: Path) -> None:
    first = report_spool.put(tmp_path, b"From: a@b.example\r\n\r\none\r\n", {"report_id": None})
    second = report_spool.put(tmp_path, b"From: a@b.example\r\n\r\ntwo\r\n", {"report_id": 7})
    assert report_spool.names(tmp_path) == [first.name, second.name]
    kept = report_spool.set_aside(tmp_path, first.name)
    assert report_spool.names(tmp_path) == [second.name]
    assert (report_spool.folder(tmp_path) / kept).read_bytes().endswith(b"one\r\n")
    assert [i.report_id for i in report_spool.spooled(tmp_path)] == [7]
    assert report_spool.read(tmp_path, "../../etc/passwd") is None
