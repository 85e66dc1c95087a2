"""`mailveil doctor`: is this installation ready to run? One verdict per item.

Areas: settings, keys (present, private, matching the database), the database (reachable,
migrated), the listening ports, the smarthost (answers EHLO), and the DNS records the
deployment guide says to publish (MX for the relay and canary domains, SPF, DMARC, the DKIM
keys), asked of the operator's resolver (``dns_nameservers``) through dnspython.

Each check is a plain function returning ``Item``s and never raises: an unexpected error is
the item's failure, in words. Nothing here prints an address.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from mailveil.config import Settings
from mailveil.relay.dns import DnsTemporaryError, Resolver

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Item:
    area: str
    name: str
    verdict: str  # ok | warn | fail
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {
            "area": self.area,
            "item": self.name,
            "verdict": self.verdict,
            "detail": self.detail,
        }


def check_settings(settings: Settings) -> Iterator[Item]:
    a = "settings"
    db = "PostgreSQL" if settings.database_url.startswith("postgresql") else "SQLite"
    if settings.database_url and not settings.database_url.startswith(("postgresql", "sqlite")):
        db = settings.database_url.split(":", 1)[0]
    yield Item(a, "loaded", OK, f"relay domain {settings.relay_domain}, database {db}")
    if settings.relay_tls_cert:
        yield Item(a, "relay TLS", OK, "STARTTLS offered; AUTH over TLS")
    elif settings.relay_allow_plain_auth_on_loopback:
        yield Item(a, "relay TLS", WARN, "no certificate: AUTH only from loopback clients")
    else:
        yield Item(a, "relay TLS", WARN, "no certificate: principals cannot authenticate")
    if not settings.log_json:
        yield Item(a, "logs", WARN, "log_json is off: log lines are not machine-readable")
    if not settings.alert_webhook_url:
        yield Item(a, "alerts", WARN, "alert_webhook_url is empty: alerts stay in the ledger")
    else:
        yield Item(a, "alerts", OK, "webhook configured (signed)")


def _mode(path: Any) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_keys(settings: Settings) -> Iterator[Item]:
    a = "keys"
    folder = settings.keys_dir
    if not folder.is_dir():
        yield Item(a, "key directory", FAIL, f"{folder} does not exist: run `mailveil init`")
        return
    # Public halves (*.pub) may be read by anyone; every secret must be the owner's alone.
    secrets = [p for p in folder.iterdir() if p.is_file() and p.suffix != ".pub"]
    loose = sorted(p.name for p in secrets if _mode(p) & 0o077)
    if loose:
        yield Item(
            a, "permissions", FAIL,
            f"readable by others: {', '.join(loose)} (chmod 600 {folder}/*)",
        )  # fmt: skip
    else:
        yield Item(a, "permissions", OK, f"{len(secrets)} secret file(s) in {folder}, all 0600")
    if _mode(folder) & 0o077:
        yield Item(a, "key directory", FAIL, f"{folder} is open to others (chmod 700)")
    loaders: list[tuple[str, Callable[[], object]]] = []
    from mailveil.ledger.signing import CheckpointSigner
    from mailveil.relay.dkim import DkimSigner
    from mailveil.relay.messages import load_verp_key
    from mailveil.vault import Vault

    loaders = [
        ("address keys", lambda: Vault.open(settings)),
        ("ledger signing key", lambda: CheckpointSigner.load(settings)),
        ("DKIM keys", lambda: DkimSigner.load(settings)),
        ("VERP key", lambda: load_verp_key(settings)),
    ]
    for name, load in loaders:
        try:
            load()
        except Exception as exc:
            yield Item(a, name, FAIL, f"{type(exc).__name__}: {exc}")
        else:
            yield Item(a, name, OK, "present and readable")


def check_database(settings: Settings) -> Iterator[Item]:
    from mailveil.db.migrate import current_revision, head_revision
    from mailveil.db.session import make_engine

    a = "database"
    if not settings.database_url and not (settings.data_dir / "mailveil.db").is_file():
        yield Item(a, "reachable", FAIL, f"no database in {settings.data_dir}: run `mailveil init`")
        return
    try:
        engine = make_engine(settings)
    except Exception as exc:
        yield Item(a, "reachable", FAIL, f"database_url: {type(exc).__name__}")
        return
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        yield Item(a, "reachable", OK, engine.dialect.name)
        current, head = current_revision(engine), head_revision()
        if current == head:
            yield Item(a, "migrated", OK, f"at {head}")
        else:
            yield Item(
                a, "migrated", FAIL, f"at {current or 'nothing'}, code expects {head}: "
                "run `mailveil init` (it migrates)",
            )  # fmt: skip
            return
        yield from _keys_match(settings, engine)
    except SQLAlchemyError as exc:
        yield Item(a, "reachable", FAIL, f"{type(exc).__name__} (check database_url)")
    finally:
        engine.dispose()


def _keys_match(settings: Settings, engine: Any) -> Iterator[Item]:
    """The keys in data_dir are the ones this database's data was written with."""
    from sqlalchemy.orm import Session

    from mailveil.ledger.append import latest_checkpoint
    from mailveil.ledger.signing import CheckpointError, load_public_key, verify_checkpoint
    from mailveil.vault import Vault, VaultKey

    a = "keys vs database"
    with Session(engine) as s:
        checkpoint = latest_checkpoint(s)
        rows = s.scalars(select(VaultKey)).all()
        try:
            if checkpoint is None:
                yield Item(a, "ledger signing key", OK, "no checkpoint yet")
            else:
                verify_checkpoint(checkpoint.note, load_public_key(settings))
                yield Item(a, "ledger signing key", OK, f"signs checkpoint {checkpoint.tree_size}")
        except (CheckpointError, OSError, ValueError) as exc:
            yield Item(
                a, "ledger signing key", FAIL,
                f"the newest checkpoint does not verify with {settings.keys_dir} ({exc}): "
                "point data_dir at the keys this database was created with",
            )  # fmt: skip
        try:
            vault = Vault.open(settings)
            missing = sorted({r.kek_id for r in rows} - set(vault.kek_ids()))
        except Exception as exc:
            yield Item(a, "address keys", FAIL, f"{type(exc).__name__}")
            return
        if missing:
            yield Item(
                a, "address keys", FAIL,
                f"key-encryption key(s) {', '.join(missing)} missing from {settings.keys_dir}",
            )  # fmt: skip
            return
        for row in rows[:1]:
            try:
                vault._unwrap(row)  # the key material, not only its name, matches
            except Exception:
                yield Item(a, "address keys", FAIL, f"{row.kek_id} does not open this database")
                return
        yield Item(a, "address keys", OK, f"{len(rows)} data key(s) open")


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def check_ports(settings: Settings) -> Iterator[Item]:
    a = "ports"
    for name, host, port in (
        ("API", settings.api_host, settings.api_port),
        ("relay", settings.relay_host, settings.relay_port),
    ):
        if port == 0:
            yield Item(a, name, OK, "any free port (0)")
            continue
        if _listening(host, port):
            yield Item(a, name, OK, f"{host}:{port} is bound (a server is listening: running?)")
            continue
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
                sock.bind((host, port))
        except OSError as exc:
            yield Item(a, name, FAIL, f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        else:
            yield Item(a, name, OK, f"{host}:{port} is free")


def check_smarthost(settings: Settings) -> Iterator[Item]:
    a = "smarthost"
    where = f"{settings.smarthost_host}:{settings.smarthost_port}"
    try:
        timeout = min(settings.smarthost_timeout, 10.0)
        with smtplib.SMTP(settings.smarthost_host, settings.smarthost_port, timeout=timeout) as c:
            code, _ = c.ehlo(settings.relay_hostname or settings.relay_domain)
            if code != 250:
                yield Item(a, "EHLO", FAIL, f"{where} answered EHLO with {code}")
                return
            if settings.smarthost_starttls:
                if not c.has_extn("starttls"):
                    yield Item(a, "STARTTLS", FAIL, f"{where} does not offer STARTTLS")
                    return
                context = ssl.create_default_context()
                if not settings.smarthost_validate_certs:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                c.starttls(context=context)
            yield Item(a, "EHLO", OK, f"{where} answers")
    except (OSError, smtplib.SMTPException) as exc:
        yield Item(a, "EHLO", FAIL, f"{where}: {type(exc).__name__}: {exc}")


def _txt(resolver: Resolver, name: str, prefix: str) -> list[str]:
    return [t for t in resolver.txt(name) if t.lower().startswith(prefix.lower())]


def check_dns(settings: Settings, resolver: Resolver) -> Iterator[Item]:
    a = "dns"
    domain, canary = settings.relay_domain, settings.canary_domain
    for name in (domain, canary):
        try:
            mx = resolver.mx(name)
        except DnsTemporaryError as exc:
            yield Item(a, f"MX {name}", FAIL, f"no answer: {exc}")
            continue
        if mx:
            hosts = ", ".join(f"{p} {h}" for p, h in sorted(mx))
            yield Item(a, f"MX {name}", OK, hosts)
        else:
            yield Item(a, f"MX {name}", FAIL, "no MX record: mail for it cannot reach the relay")
    yield from _dns_spf_dmarc(domain, resolver)
    yield from _dns_dkim(settings, resolver)


def _dns_spf_dmarc(domain: str, resolver: Resolver) -> Iterator[Item]:
    from mailveil.relay.dmarc import parse_dmarc

    a = "dns"
    try:
        spf = _txt(resolver, domain, "v=spf1")
        dmarc = _txt(resolver, f"_dmarc.{domain}", "v=DMARC1")
    except DnsTemporaryError as exc:
        yield Item(a, "SPF/DMARC", FAIL, f"no answer: {exc}")
        return
    if len(spf) == 1:
        verdict = WARN if spf[0].rstrip().endswith("+all") else OK
        yield Item(a, f"SPF {domain}", verdict, spf[0])
    else:
        why = "no SPF record" if not spf else f"{len(spf)} SPF records (RFC 7208 allows one)"
        yield Item(a, f"SPF {domain}", FAIL, why)
    if len(dmarc) != 1:
        why = "no DMARC record" if not dmarc else f"{len(dmarc)} DMARC records"
        yield Item(a, f"DMARC _dmarc.{domain}", FAIL, why)
        return
    record = parse_dmarc(dmarc[0], domain)
    if record is None:
        yield Item(a, f"DMARC _dmarc.{domain}", FAIL, f"unreadable: {dmarc[0]}")
    elif record.policy == "none":
        yield Item(a, f"DMARC _dmarc.{domain}", WARN, "p=none: spoofed mail is not refused")
    else:
        yield Item(a, f"DMARC _dmarc.{domain}", OK, f"p={record.policy}")


def _dns_dkim(settings: Settings, resolver: Resolver) -> Iterator[Item]:
    from mailveil.relay.dkim import DkimSigner

    a = "dns"
    try:
        expected = DkimSigner.load(settings).dns_records()
    except Exception as exc:
        yield Item(a, "DKIM", FAIL, f"local DKIM keys unreadable ({type(exc).__name__})")
        return
    for name, value in sorted(expected.items()):
        try:
            found = _txt(resolver, name, "v=DKIM1")
        except DnsTemporaryError as exc:
            yield Item(a, f"DKIM {name}", FAIL, f"no answer: {exc}")
            continue
        want = _p_tag(value)
        if any(_p_tag(t) == want for t in found):
            yield Item(a, f"DKIM {name}", OK, "published key matches the local key")
        elif found:
            yield Item(a, f"DKIM {name}", FAIL, "published key differs from the local key")
        else:
            yield Item(a, f"DKIM {name}", FAIL, f"not published; publish: {value}")


def _p_tag(record: str) -> str:
    for part in record.split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip() == "p":
            return "".join(value.split())
    return ""


def run_checks(settings: Settings, *, resolver: Resolver | None = None) -> list[Item]:
    from mailveil.relay.sender_auth import resolver_for

    items: list[Item] = []
    checks: list[Callable[[], Iterator[Item]]] = [
        lambda: check_settings(settings),
        lambda: check_keys(settings),
        lambda: check_database(settings),
        lambda: check_ports(settings),
        lambda: check_smarthost(settings),
        lambda: check_dns(settings, resolver if resolver is not None else resolver_for(settings)),
    ]
    for check in checks:
        try:
            items.extend(check())
        except Exception as exc:  # a check's own bug is a failed item, not a crash
            items.append(Item("doctor", getattr(check, "__name__", "check"), FAIL, repr(exc)))
    return items


__all__ = ["FAIL", "OK", "WARN", "Item", "run_checks"]
