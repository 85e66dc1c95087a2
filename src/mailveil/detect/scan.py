"""The detection job's ledger scan: turn new ledger entries into signals.

The relay writes what it saw (a ``stranger_at_alias`` entry with the sender's identity, a
``message`` to an alias, a ``canary_hit`` for mail to a canary's own address); employee
access writes ``access_refused``. This job reads from where it stopped (a cursor) and files
signals, so detection needs no second source of truth and re-running it is harmless
(one signal per (kind, ledger entry)).

Who each signal names, and how surely, is ``attribution``'s decision: the source from the
ledger's disclosure unless something explains the stranger's knowledge of the alias, the
recipient only from an authenticated identity. A stranger's mail at the alias of one
customer who had already seen it waits (the signal is kept, naming nobody) until strangers
write to a second customer's alias of the same principal; then both count.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.access.models import Canary
from mailveil.contacts.models import Alias, Principal
from mailveil.detect.attribution import (
    NAME_CUSTOMERS,
    STRONG_CUSTOMERS,
    recipient_piece,
    source_piece,
)
from mailveil.detect.matching import SenderDirectory
from mailveil.detect.models import DetectCursor, Signal
from mailveil.detect.signals import promote_source, record_signal
from mailveil.detect.strength import Piece
from mailveil.ledger.append import Ledger
from mailveil.ledger.models import LedgerEntry

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
    ledger: Ledger,
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
            filed = _file(session, ledger, directory, seq, kind, actor, subject, alias, detail)
            if filed:
                result.signals[filed] = result.signals.get(filed, 0) + 1
    for pid, count in refusals.items():
        if count >= PROBING_REFUSALS:
            piece = Piece(
                "source", pid, "statistical", "refusal-count",
                f"{count} refused access attempts in one scan (threshold {PROBING_REFUSALS})",
                counted=True, weak=True, score=float(count), entry=refusal_seq[pid],
            )  # fmt: skip
            record_signal(
                session,
                ledger,
                kind="access_refusals",
                confidence="anomaly",
                summary=f"{count} refused access attempts by {_describe(session, pid)}",
                score=float(count),
                evidence={"refusals": count, "last_entry": refusal_seq[pid]},
                ledger_seq=refusal_seq[pid],
                pieces=[piece],
            )
            result.signals["access_refusals"] = result.signals.get("access_refusals", 0) + 1
    cursor.seq = result.last_seq
    session.flush()
    return result


def _file(
    session: Session,
    ledger: Ledger,
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
        pieces = [
            Piece("source", canary.principal_id, "relay-record", "canary",
                  "the relay delivered mail to a canary planted for this principal",
                  counted=True, entry=seq),
        ]  # fmt: skip
        if sender is not None:
            pieces.append(
                Piece("recipient", sender, "authenticated", "relay-message",
                      "the relay delivered the message as this principal's own",
                      counted=True, entry=seq)
            )  # fmt: skip
        record_signal(
            session,
            ledger,
            kind="canary_hit",
            confidence="exact",
            summary=f"mail to a canary's alias, sent by {_describe(session, sender)}",
            customer_id=customer_id,
            alias=alias,
            ledger_seq=seq,
            evidence={"entry": seq, "via": "alias", "sender": actor},
            pieces=pieces,
        )
        return "canary_hit"
    if kind == "canary_hit":
        # Written by the relay for mail to a canary's own (real) address.
        source = (
            canary.principal_id if canary is not None else _principal_ref(detail.get("principal"))
        )
        pieces = [
            Piece("source", source, "relay-record", "canary",
                  "mail reached the address of a canary planted for this principal",
                  counted=source is not None, entry=seq),
        ]  # fmt: skip
        sent_by = recipient_piece(detail, directory, entry=seq)
        if sent_by is not None:
            pieces.append(sent_by)
        record_signal(
            session,
            ledger,
            kind="canary_hit",
            confidence="exact",
            summary=f"mail to a canary's own address, planted for {_describe(session, source)}",
            customer_id=customer_id,
            ledger_seq=seq,
            evidence={"entry": seq, "via": "address", **_identity(detail)},
            pieces=pieces,
        )
        return "canary_hit"
    # stranger_at_alias
    source = owner if owner is not None else _principal_ref(detail.get("principal"))
    so_far = _stranger_customers(session, source) if source is not None else []
    about_source = source_piece(
        session,
        owner=source,
        alias=alias,
        customer_id=customer_id,
        canary=canary is not None,
        detail=detail,
        entry=seq,
        customers_so_far=so_far,
    )
    pieces = [about_source]
    sent_by = recipient_piece(detail, directory, entry=seq)
    if sent_by is not None:
        pieces.append(sent_by)
    recipient = sent_by.principal_id if sent_by is not None and sent_by.counted else None
    signal_kind = "canary_hit" if canary is not None else "stranger_at_alias"
    signal = record_signal(
        session,
        ledger,
        kind=signal_kind,
        confidence="exact",
        summary=(
            f"{_describe(session, recipient)} wrote to the alias disclosed to "
            f"{_describe(session, source)}"
        ),
        customer_id=customer_id,
        alias=alias,
        ledger_seq=seq,
        evidence={"entry": seq, **_identity(detail)},
        pieces=pieces,
    )
    if about_source.counted and about_source.basis == "alias-disclosure" and so_far:
        _promote_waiting(session, ledger, signal, len(set(so_far) | {customer_id}))
    return signal_kind


def _stranger_customers(session: Session, principal_id: int) -> list[int]:
    """Customers of this principal whose aliases strangers wrote to, unexplained so far."""
    return [
        c
        for c in session.scalars(
            select(Signal.customer_id).where(
                Signal.candidate_source_id == principal_id,
                Signal.kind == "stranger_at_alias",
                Signal.source_strength == "relay-record",
            )
        )
        if c is not None
    ]


def _promote_waiting(session: Session, ledger: Ledger, named: Signal, customers: int) -> None:
    """Count the earlier signals of ``named``'s source that waited for a second customer."""
    waiting = session.scalars(
        select(Signal)
        .where(
            Signal.candidate_source_id == named.source_principal_id,
            Signal.kind == "stranger_at_alias",
            Signal.source_strength == "relay-record",
            Signal.source_principal_id.is_(None),
            Signal.id != named.id,
        )
        .order_by(Signal.id)
    )
    for signal in waiting:
        promote_source(
            session,
            ledger,
            signal,
            f"strangers wrote to the aliases of {customers} customers of this principal "
            f"(named from {NAME_CUSTOMERS})",
            weak=customers < STRONG_CUSTOMERS,
        )


def _identity(detail: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "envelope_from",
        "header_from",
        "client_ip",
        "helo",
        "spf",
        "spf_domain",
        "spf_aligned",
        "dkim",
        "dmarc",
        "from_domain",
        "relay_copy",
    )
    return {k: detail.get(k) for k in keys if detail.get(k) not in (None, "", [])}


__all__ = ["SCANNED_KINDS", "ScanResult", "scan_ledger"]
