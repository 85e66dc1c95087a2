"""Alerts: a signed JSON webhook when an incident opens, a send halts, a canary is hit or a
witness disagrees.

Every one of those is a ledger entry already (``incident_opened``, ``send_halted``,
``canary_hit``, ``witness_alert``), so alerts are raised from the ledger: ``enqueue`` reads
the entries past its cursor and writes one ``ops_alerts`` row per alert (the outbox),
``deliver_due`` posts the rows that are due and retries failures with exponential backoff.
Nothing is lost across restarts: an entry is in the ledger before any alert exists, the
cursor and the outbox rows move in one transaction, and a row stays until its delivery
succeeded. Delivery is at least once: receivers deduplicate on
``X-Mailveil-Alert-Id``.

Signature: ``X-Mailveil-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`` over
``<t>.<body>`` with ``alert_webhook_secret`` (``verify_signature`` is the receiver's check).
Payloads carry ids, kinds and reasons from the ledger entry, never an address (and go through
the log scrubber as well).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mailveil import __version__
from mailveil.config import Settings
from mailveil.db.session import write_session_factory
from mailveil.ledger.models import LedgerEntry, LedgerHead, from_time_us
from mailveil.logs import get_logger, scrub_value
from mailveil.ops.models import OpsAlert, OpsAlertCursor

SIGNATURE_HEADER = "X-Mailveil-Signature"
ID_HEADER = "X-Mailveil-Alert-Id"
MAX_BACKOFF_SECONDS = 3600.0
BATCH = 100

_log = get_logger("mailveil.alerts")
# Ledger kinds that may raise an alert (``_alert_of`` decides).
_KINDS = ("incident_opened", "send_halted", "canary_hit", "witness_alert")
# What a halt's alert tells (notify.gates.halt writes them all in its ``send_halted`` entry,
# beside the ``send_gate_failed`` signal it files: that signal's own ledger entry carries
# neither the send nor the gate, so the halt is alerted from this entry, once).
_HALT_FACTS = (
    "send", "template", "version", "stage", "gate", "rate", "threshold", "stage_recipients",
    "delivered",
)  # fmt: skip


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, *, tolerance: float = 300.0, now: float | None = None
) -> bool:
    """The receiver's check: a ``v1`` HMAC over the timestamp and body, made recently."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), f"t={ts},v1={parts.get('v1', '')}")


def _pick(detail: dict[str, Any], *names: str) -> dict[str, Any]:
    return {n: detail[n] for n in names if n in detail}


def _alert_of(kind: str, detail: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """(alert kind, summary, facts) for a ledger entry, or None when it raises none."""
    if kind == "incident_opened":
        facts = _pick(detail, "incident", "kind")
        return "incident_opened", f"incident {facts.get('incident')} opened", facts
    if kind == "send_halted":
        facts = _pick(detail, *_HALT_FACTS)
        if "signal_id" in detail:
            facts["signal"] = detail["signal_id"]
        stage = facts.get("stage")
        at = f" at stage {int(stage) + 1}" if isinstance(stage, int) else ""
        return (
            "send_halted",
            f"send {facts.get('send')} halted{at} by its {facts.get('gate')} gate: rate "
            f"{facts.get('rate')} above {facts.get('threshold')}",
            facts,
        )
    if kind == "canary_hit":
        facts = _pick(detail, "principal", "action", "sha256", "size")
        return "canary_hit", "mail reached a canary address", facts
    if kind == "witness_alert":
        facts = _pick(detail, "witness", "reason", "ledger_size", "witness_size", "summary")
        return "witness_disagreement", str(detail.get("summary", "a witness disagreed")), facts
    return None


def _payload(settings: Settings, entry: Any, alert: tuple[str, str, dict[str, Any]]) -> str:
    name, summary, facts = alert
    body = {
        "alert": name,
        "summary": summary,
        "ledger_seq": int(entry.seq),
        "time": from_time_us(int(entry.time_us)).isoformat(),
        "subject": entry.subject,
        "ref": entry.ref,
        "facts": facts,
        "origin": settings.origin,
    }
    return json.dumps(scrub_value(body, settings.relay_domain.lower()), sort_keys=True)


def enqueue(session: Session, settings: Settings) -> int:
    """Outbox rows for the alerting ledger entries past the cursor; the cursor moved to the
    committed ledger size. In the caller's transaction; the number of alerts added."""
    cursor = session.get(OpsAlertCursor, 1)
    start = cursor.ledger_size if cursor is not None else 0
    size = int(session.scalar(select(func.max(LedgerHead.size))) or 0)
    if size <= start:
        return 0
    rows = session.execute(
        select(
            LedgerEntry.seq, LedgerEntry.time_us, LedgerEntry.kind, LedgerEntry.subject,
            LedgerEntry.ref, LedgerEntry.detail,
        )
        .where(LedgerEntry.seq >= start, LedgerEntry.seq < size, LedgerEntry.kind.in_(_KINDS))
        .order_by(LedgerEntry.seq)
    ).all()  # fmt: skip
    added = 0
    now = datetime.now(UTC)
    for row in rows:
        alert = _alert_of(row.kind, json.loads(row.detail or "{}"))
        if alert is None:
            continue
        session.add(
            OpsAlert(
                ledger_seq=int(row.seq), kind=alert[0], payload=_payload(settings, row, alert),
                state="pending", attempts=0, next_attempt_at=now, created_at=now,
            )
        )  # fmt: skip
        added += 1
    if cursor is None:
        session.add(OpsAlertCursor(id=1, ledger_size=size))
    else:
        cursor.ledger_size = size
    session.flush()
    return added


@dataclass
class PumpResult:
    enqueued: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def _post(client: httpx.Client, settings: Settings, alert: OpsAlert) -> str | None:
    """None when the receiver took it (2xx), else why not (kept in ``last_error``)."""
    body = alert.payload.encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(settings.alert_webhook_secret, int(time.time()), body),
        ID_HEADER: str(alert.id),
        "User-Agent": f"mailveil/{__version__}",
    }
    try:
        response = client.post(settings.alert_webhook_url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


def deliver_due(
    session_factory: sessionmaker[Session],
    settings: Settings,
    *,
    metrics: Any = None,
    client: httpx.Client | None = None,
    result: PumpResult | None = None,
    now: datetime | None = None,
) -> PumpResult:
    """Post every pending alert due by ``now`` once; each outcome committed on its own."""
    result = result or PumpResult()
    if not settings.alert_webhook_url:
        return result
    own = client is None
    http = client or httpx.Client(timeout=settings.alert_timeout_seconds)
    try:
        with session_factory() as s:
            due = s.scalars(
                select(OpsAlert)
                .where(
                    OpsAlert.state == "pending",
                    OpsAlert.next_attempt_at <= (now or datetime.now(UTC)),
                )
                .order_by(OpsAlert.id)
                .limit(BATCH)
            ).all()
            s.commit()
            for alert in due:
                error = _post(http, settings, alert)
                _settle(s, settings, alert, error, result, metrics)
                s.commit()
    finally:
        if own:
            http.close()
    return result


def _settle(
    s: Session,
    settings: Settings,
    alert: OpsAlert,
    error: str | None,
    result: PumpResult,
    metrics: Any,
) -> None:
    now = datetime.now(UTC)
    attempts = alert.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "last_error": error}
    if error is None:
        values.update(state="delivered", delivered_at=now)
        outcome = "delivered"
        result.delivered += 1
    elif attempts >= settings.alert_max_attempts:
        values.update(state="failed")
        outcome = "failed"
        result.failed += 1
    else:
        delay = min(settings.alert_retry_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
        values.update(next_attempt_at=now + timedelta(seconds=delay))
        outcome = "retrying"
        result.retrying += 1
    s.execute(update(OpsAlert).where(OpsAlert.id == alert.id).values(**values))
    if error is not None:
        result.errors.append(error)
    if metrics is not None:
        metrics.alerts.labels(outcome).inc()
    log = _log.warning if error is not None else _log.info
    log(
        "alert_webhook", alert_id=alert.id, alert=alert.kind, ledger_seq=alert.ledger_seq,
        outcome=outcome, attempts=attempts, error=error,
    )  # fmt: skip


def pump(
    session_factory: sessionmaker[Session],
    settings: Settings,
    *,
    metrics: Any = None,
    client: httpx.Client | None = None,
    now: datetime | None = None,
) -> PumpResult:
    """Enqueue new alerts from the ledger, then deliver what is due. Safe to run in several
    processes (the outbox's unique ledger_seq keeps one row per alert)."""
    result = PumpResult()
    if not settings.alert_webhook_url:
        return result
    try:
        # Reads the ledger, then writes the outbox: beside the relay's writes on SQLite it
        # must hold the write lock from the start.
        with write_session_factory(session_factory)() as s:
            result.enqueued = enqueue(s, settings)
            s.commit()
    except IntegrityError:  # another process enqueued the same entries first
        pass
    return deliver_due(
        session_factory, settings, metrics=metrics, client=client, result=result, now=now
    )


def list_alerts(session: Session, *, state: str | None = None, limit: int = 100) -> list[OpsAlert]:
    query = select(OpsAlert).order_by(OpsAlert.id.desc()).limit(limit)
    if state:
        query = query.where(OpsAlert.state == state)
    return list(session.scalars(query))


def retry_failed(session: Session) -> int:
    """Put alerts that were given up back in the queue (after fixing the receiver)."""
    done = session.execute(
        update(OpsAlert)
        .where(OpsAlert.state == "failed")
        .values(state="pending", attempts=0, next_attempt_at=datetime.now(UTC))
    )
    return int(getattr(done, "rowcount", 0) or 0)


__all__ = [
    "ID_HEADER",
    "SIGNATURE_HEADER",
    "PumpResult",
    "deliver_due",
    "enqueue",
    "list_alerts",
    "pump",
    "retry_failed",
    "sign",
    "verify_signature",
]
