"""The detection job's ledger scan: turn new ledger entries into signals.

The relay writes what it saw (a ``stranger_at_alias`` entry with the sender's identity, a
``message`` to an alias, a ``canary_hit`` for mail to a canary's own address); employee
access writes ``access_refused``. This job reads from where it stopped (a cursor) and files
signals, so detection needs no second source of truth and re-running it is harmless
(one signal per (kind, ledger entry)).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.access.models import Canary
from mailveil.config import Settings
from mailveil.contacts.models import Alias, Customer, Principal
from mailveil.detect.matching import SenderDirectory
from mailveil.detect.models import DetectCursor
from mailveil.detect.signals import record_signal
from mailveil.ledger.models import LedgerEntry
from mailveil.ledger.signing import CheckpointSigner

CURSOR = "ledger"
SCANNED_KINDS = ("stranger_at_alias", "message", "canary_hit", "access_refused")
BATCH = 5000
# Refusals per employee in one scan that count as probing (guessing ids, pushing limits).
PROBING_REFUSALS = 20


@dataclass
class ScanResult:
    entries: int = 0
    signals: dict[str, int] = field(default_factory=dict)
    last_seq: int = -1


def _principal_ref(value: Any) -> int | None:
    if isinstance(value, str) and value.startswith("principal:") and value[10:].isdigit():
        return int(value[10:])
    return None


def _customer_ref(value: Any) -> int | None:
    if isinstance(value, str) and value.startswith("customer:") and value[9:].isdigit():
        return int(value[9:])
    return None


def _cursor(session: Session) -> DetectCursor:
    row = session.get(DetectCursor, CURSOR)
    if row is None:
        row = DetectCursor(name=CURSOR, seq=-1)
        session.add(row)
        session.flush()
    return row


def _describe(session: Session, pid: int | None) -> str:
    principal = session.get(Principal, pid) if pid is not None else None
    if principal is None:
        return "an unknown sender"
    return f"{principal.kind} {principal.display_name or principal.external_id}"


def _alias_owner(session: Session, address: str | None) -> tuple[int | None, int | None]:
    if not address:
        return None, None
    row = session.execute(
        select(Alias.principal_id, Alias.customer_id).where(Alias.address == address)
    ).first()
    return (row[0], row[1]) if row else (None, None)


def scan_ledger(
    session: Session,
    settings: Settings,
    signer: CheckpointSigner,
    *,
    max_entries: int | None = None,
) -> ScanResult:
    """Read new entries of the scanned kinds and file their signals. Does not commit."""
    cursor = _cursor(session)
    result = ScanResult(last_seq=cursor.seq)
    directory: SenderDirectory | None = None
    refusals: Counter[int] = Counter()
    refusal_seq: dict[int, int] = {}
    while max_entries is None or result.entries < max_entries:
        rows = session.execute(
            select(
                LedgerEntry.seq,
                LedgerEntry.kind,
                LedgerEntry.actor,
                LedgerEntry.subject,
                LedgerEntry.alias,
                LedgerEntry.detail,
            )
            .where(LedgerEntry.seq > result.last_seq, LedgerEntry.kind.in_(SCANNED_KINDS))
            .order_by(LedgerEntry.seq)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        for seq, kind, actor, subject, alias, detail_text in rows:
            result.entries += 1
            result.last_seq = seq
            detail = json.loads(detail_text)
            if kind == "access_refused":
                pid = _principal_ref(actor)
                if pid is not None:
                    refusals[pid] += 1
                    refusal_seq[pid] = seq
                continue
            if directory is None:
                directory = SenderDirectory.load(session)
            filed = _file(
                session, settings, signer, directory, seq, kind, actor, subject, alias, detail
            )
            if filed:
                result.signals[filed] = result.signals.get(filed, 0) + 1
    for pid, count in refusals.items():
        if count >= PROBING_REFUSALS:
            record_signal(
                session,
                settings,
                signer,
                kind="access_refusals",
                confidence="anomaly",
                summary=f"{count} refused access attempts by {_describe(session, pid)}",
                source_principal_id=pid,
                score=float(count),
                evidence={"refusals": count, "last_entry": refusal_seq[pid]},
                ledger_seq=refusal_seq[pid],
            )
            result.signals["access_refusals"] = result.signals.get("access_refusals", 0) + 1
    cursor.seq = result.last_seq
    session.flush()
    return result


def _file(
    session: Session,
    settings: Settings,
    signer: CheckpointSigner,
    directory: SenderDirectory,
    seq: int,
    kind: str,
    actor: str | None,
    subject: str | None,
    alias: str | None,
    detail: dict[str, Any],
) -> str | None:
    customer_id = _customer_ref(subject)
    canary = session.get(Canary, customer_id) if customer_id is not None else None
    owner, _ = _alias_owner(session, alias)
    if kind == "message":
        # Mail to a canary's alias is a leak even from the alias's own principal: no
        # legitimate work ever writes to a canary.
        if canary is None or detail.get("principal") is None or subject is None:
            return None
        sender = _principal_ref(actor)
        record_signal(
            session,
            settings,
            signer,
            kind="canary_hit",
            confidence="exact",
            summary=f"mail to a canary's alias, sent by {_describe(session, sender)}",
            source_principal_id=canary.principal_id,
            recipient_principal_id=sender,
            customer_id=customer_id,
            alias=alias,
            ledger_seq=seq,
            evidence={"entry": seq, "via": "alias", "sender": actor},
        )
        return "canary_hit"
    if kind == "canary_hit":
        # Written by the relay for mail to a canary's own (real) address.
        source = (
            canary.principal_id if canary is not None else _principal_ref(detail.get("principal"))
        )
        recipient, how = directory.match(
            [detail.get("envelope_from"), detail.get("header_from")],
            [d.get("d") for d in detail.get("dkim") or () if d.get("result") == "pass"],
        )
        record_signal(
            session,
            settings,
            signer,
            kind="canary_hit",
            confidence="exact",
            summary=f"mail to a canary's own address, planted for {_describe(session, source)}",
            source_principal_id=source,
            recipient_principal_id=recipient,
            customer_id=customer_id,
            ledger_seq=seq,
            evidence={"entry": seq, "via": "address", "matched_by": how, **_identity(detail)},
        )
        return "canary_hit"
    # stranger_at_alias
    source = owner if owner is not None else _principal_ref(detail.get("principal"))
    recipient = _principal_ref(detail.get("authenticated_principal"))
    how = "SMTP AUTH" if recipient is not None else ""
    if recipient is None:
        recipient, how = directory.match(
            [detail.get("envelope_from"), detail.get("header_from")],
            [d.get("d") for d in detail.get("dkim") or () if d.get("result") == "pass"],
        )
    signal_kind = "canary_hit" if canary is not None else "stranger_at_alias"
    record_signal(
        session,
        settings,
        signer,
        kind=signal_kind,
        confidence="exact",
        summary=(
            f"{_describe(session, recipient)} wrote to the alias disclosed to "
            f"{_describe(session, source)}"
        ),
        source_principal_id=source,
        recipient_principal_id=recipient,
        customer_id=customer_id,
        alias=alias,
        ledger_seq=seq,
        evidence={"entry": seq, "matched_by": how, **_identity(detail)},
    )
    return signal_kind


def _identity(detail: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "envelope_from",
        "header_from",
        "client_ip",
        "helo",
        "spf",
        "spf_domain",
        "dkim",
        "dmarc",
        "from_domain",
    )
    return {k: detail.get(k) for k in keys if detail.get(k) not in (None, "", [])}


def customer_is_canary(session: Session, customer_id: int) -> bool:
    return bool(session.scalar(select(Customer.is_canary).where(Customer.id == customer_id)))


__all__ = ["SCANNED_KINDS", "ScanResult", "customer_is_canary", "scan_ledger"]
