"""`mailveil doctor` on a real data directory: a smarthost on loopback, the published records
on a DNS server on loopback (the operator's resolver setting points at it). Everything right
is a clean bill; each thing broken is its own failed item and a non-zero exit."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "relay"))

from sender_auth_kit import LoopbackDns

from mailveil.cli.app import app
from mailveil.cli.setup import initialise
from mailveil.config import load_settings
from mailveil.demo.harness import free_port
from mailveil.doctor import run_checks
from mailveil.relay.dkim import DkimSigner
from mailveil.relay.sender_auth import StaticResolver
from smtp_kit import Sink

DOMAIN = "relay.shop.example"
CANARY = "canary.shop.example"


@pytest.fixture
def smarthost() -> Iterator[Sink]:
    with Sink() as sink:
        yield sink


def _zone(data_dir: Path) -> dict[tuple[str, str], list[str]]:
    settings = load_settings(env={}, data_dir=data_dir, relay_domain=DOMAIN)
    zone: dict[tuple[str, str], list[str]] = {
        (DOMAIN, "MX"): [f"10 mx.{DOMAIN}."],
        (CANARY, "MX"): [f"10 mx.{DOMAIN}."],
        (DOMAIN, "TXT"): ["v=spf1 ip4:192.0.2.25 -all"],
        (f"_dmarc.{DOMAIN}", "TXT"): [f"v=DMARC1; p=reject; rua=mailto:dmarc@{DOMAIN}"],
    }
    for name, value in DkimSigner.load(settings).dns_records().items():
        zone[(name, "TXT")] = [value]
    return zone


def _env(data_dir: Path, smarthost_port: int, dns_port: int) -> dict[str, str | None]:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MAILVEIL_")}
    env.update({
        "MAILVEIL_DATA_DIR": str(data_dir), "MAILVEIL_RELAY_DOMAIN": DOMAIN,
        "MAILVEIL_CANARY_DOMAIN": CANARY, "MAILVEIL_SMARTHOST_PORT": str(smarthost_port),
        "MAILVEIL_DNS_NAMESERVERS": f"127.0.0.1:{dns_port}",
        "MAILVEIL_DNS_TIMEOUT_SECONDS": "1", "MAILVEIL_API_PORT": str(free_port()),
        "MAILVEIL_RELAY_PORT": str(free_port()), "COLUMNS": "200",
    })  # fmt: skip
    return env


def _doctor(env: dict[str, str | None]) -> tuple[int, dict[str, dict[str, str]]]:
    result = CliRunner().invoke(app, ["doctor", "--json"], env=env)
    items = json.loads(result.stdout)
    return result.exit_code, {f"{i['area']}/{i['item']}": i for i in items}


def test_doctor_passes_a_ready_installation_and_names_each_fault(
    tmp_path: Path, smarthost: Sink
) -> None:
    data_dir = tmp_path / "var"
    initialise(load_settings(env={}, data_dir=data_dir, relay_domain=DOMAIN), issue_admin=False)
    zone = _zone(data_dir)
    with LoopbackDns(zone) as dns_server:
        env = _env(data_dir, smarthost.port, dns_server.port)
        code, items = _doctor(env)
        failed = [k for k, i in items.items() if i["verdict"] == "fail"]
        assert code == 0 and failed == [], items
        assert items[f"dns/DKIM mv-ed._domainkey.{DOMAIN}"]["verdict"] == "ok"
        assert items[f"dns/DMARC _dmarc.{DOMAIN}"]["detail"] == "p=reject"
        assert items["database/migrated"]["verdict"] == "ok"
        assert items["smarthost/EHLO"]["verdict"] == "ok"

    # Now break one thing in each area.
    secret = next(p for p in (data_dir / "keys").iterdir() if p.suffix != ".pub" and p.is_file())
    secret.chmod(0o644)
    zone.pop((f"_dmarc.{DOMAIN}", "TXT"))
    zone[(f"mv-rsa._domainkey.{DOMAIN}", "TXT")] = ["v=DKIM1; k=rsa; p=QUJDRA=="]
    zone.pop((CANARY, "MX"))
    with LoopbackDns(zone) as dns_server, socket.socket() as squatter:
        env = _env(data_dir, free_port(), dns_server.port)
        squatter.bind(("127.0.0.1", 0))  # not listening: a port another process holds
        env["MAILVEIL_API_HOST"] = "192.0.2.1"  # not an address of this machine
        code, items = _doctor(env)
    assert code == 1
    failed = {k for k, i in items.items() if i["verdict"] == "fail"}
    expected = {
        "keys/permissions", f"dns/DMARC _dmarc.{DOMAIN}", f"dns/DKIM mv-rsa._domainkey.{DOMAIN}",
        f"dns/MX {CANARY}", "smarthost/EHLO", "ports/API",
    }  # fmt: skip
    assert expected <= failed, items
    # The loose key file is also refused by what loads it: the same fault, in the keys areas.
    assert all(k.startswith("keys") for k in failed - expected), failed - expected
    assert secret.name in items["keys/permissions"]["detail"]
    assert "differs" in items[f"dns/DKIM mv-rsa._domainkey.{DOMAIN}"]["detail"]
    assert "192.0.2.1" in items["ports/API"]["detail"]


def test_keys_from_another_installation_are_named(tmp_path: Path) -> None:
    """A data directory whose ledger signing key did not sign this database's checkpoints."""
    from mailveil.db.session import make_engine, make_session_factory, session_scope
    from mailveil.ledger.append import append, checkpoint_now
    from mailveil.ledger.events import Event
    from mailveil.ledger.signing import CheckpointSigner, init_signing_key, key_path, pub_path

    first = load_settings(env={}, data_dir=tmp_path / "a", relay_domain=DOMAIN)
    initialise(first, issue_admin=False)
    engine = make_engine(first)
    with session_scope(make_session_factory(engine)) as s:
        append(s, [Event("note", "operator:test")], first, CheckpointSigner.load(first))
        checkpoint_now(s, first, CheckpointSigner.load(first))
    engine.dispose()
    other = first.with_overrides(data_dir=tmp_path / "b", database_url=first.db_url)
    shutil.copytree(first.keys_dir, other.keys_dir)
    key_path(other).unlink()
    pub_path(other).unlink()
    init_signing_key(other)  # a key set minted elsewhere
    items = {f"{i.area}/{i.name}": i for i in run_checks(other, resolver=StaticResolver({}))}
    item = items["keys vs database/ledger signing key"]
    assert item.verdict == "fail" and "point data_dir at the keys" in item.detail, item
    good = {f"{i.area}/{i.name}": i for i in run_checks(first, resolver=StaticResolver({}))}
    assert good["keys vs database/ledger signing key"].verdict == "ok"
