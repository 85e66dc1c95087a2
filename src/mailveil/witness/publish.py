"""The log side of tlog-witness: submit the ledger's newest checkpoint, with a consistency
proof from the size each witness last cosigned, store the cosignatures that come back, and
raise an alert when a witness refuses.

``publish_latest`` is what a scheduler calls (the API's checkpoint loop does, every
``checkpoint_every_seconds``; so do `mailveil ledger checkpoint|publish` and `incidents
export`). Call it outside any transaction: it opens short sessions of its own and talks to
the witnesses between them, never holding the ledger's append lock over the network.
Submitting the newest checkpoint is enough: cosigning it vouches for every earlier one,
which a consistency proof links to it.

Races are harmless: two publishers submitting at once are ordered by the witness, the loser
gets 409 with the winner's size and retries from there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.db.session import session_scope
from mailveil.errors import MailveilError
from mailveil.ledger import proofs
from mailveil.ledger.append import Checkpoint, Ledger, latest_checkpoint
from mailveil.ledger.notes import Note, NoteError, open_note, parse_note, parse_signature_lines
from mailveil.ops.alerts import pump
from mailveil.witness import client
from mailveil.witness.alerts import WitnessAlert, dispatch, record_alert
from mailveil.witness.models import LedgerCosignature, LedgerWitnessStatus
from mailveil.witness.policy import MAX_CLOCK_SKEW_SECONDS, WitnessConfig, parse_witnesses
from mailveil.witness.service import SIZE_MEDIA_TYPE

MAX_ROUNDS = 3  # a 409 teaches the witness's size; a second 409 in a row is a race, a third odd
_ALERTS_BY_STATUS = {422: "inconsistent", 403: "untrusted_key", 404: "unknown_log"}


@dataclass
class Outcome:
    witness: str
    result: str  # cosigned | already | refused | failed | unreachable
    tree_size: int
    witness_size: int | None = None
    detail: str = ""
    alert: WitnessAlert | None = None


@dataclass
class PublishReport:
    checkpoint: Checkpoint | None = None
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def cosigned(self) -> int:
        return sum(o.result in ("cosigned", "already") for o in self.outcomes)

    @property
    def alerts(self) -> list[WitnessAlert]:
        return [o.alert for o in self.outcomes if o.alert is not None]


def publish_latest(
    session_factory: sessionmaker[Session],
    settings: Settings,
    ledger: Ledger,
    *,
    sign_new: bool = True,
) -> PublishReport:
    """Submit the newest checkpoint (signing one first if entries arrived since, unless
    ``sign_new`` is off) to every configured witness that has not cosigned it yet."""
    witnesses = parse_witnesses(settings.witnesses)
    if not witnesses:
        return PublishReport()
    with session_scope(session_factory) as session:
        cp = ledger.checkpoint_now(session) if sign_new else latest_checkpoint(session)
    report = PublishReport(cp)
    if cp is None:
        return report
    for witness in witnesses:
        outcome = publish_to(session_factory, settings, ledger, witness, cp)
        report.outcomes.append(outcome)
    return report


def publish_to(
    session_factory: sessionmaker[Session],
    settings: Settings,
    ledger: Ledger,
    witness: WitnessConfig,
    cp: Checkpoint,
) -> Outcome:
    """Submit one checkpoint to one witness; record what happened (and any alert)."""
    with session_scope(session_factory) as session:
        status = _status(session, witness)
        known = status.cosigned_size
        have = session.get(LedgerCosignature, (cp.tree_size, witness.name)) is not None
    if have and known == cp.tree_size:
        return Outcome(witness.name, "already", cp.tree_size, known)
    # A record above the checkpoint (restored database?) is not trusted: ask from 0.
    old = known if known <= cp.tree_size else 0
    outcome = _submit(session_factory, settings, witness, cp, old)
    seq = None
    with session_scope(session_factory) as session:
        status = _status(session, witness)
        status.last_attempt_at = datetime.now(UTC)
        if outcome.witness_size is not None:
            status.cosigned_size = outcome.witness_size
        if outcome.result == "cosigned":
            status.last_success_at = status.last_attempt_at
            status.last_error, status.failures, status.last_alert = None, 0, None
        else:
            status.last_error = f"{outcome.result}: {outcome.detail}"[:500]
            status.failures += 1
            alert = outcome.alert
            if alert is not None and status.last_alert != alert.dedupe_key:
                status.last_alert = alert.dedupe_key
                seq = record_alert(session, ledger, alert)
            else:
                outcome.alert = None  # already raised for this state of the witness
    if outcome.alert is not None:
        dispatch(outcome.alert, seq, deliver=lambda: pump(session_factory, settings))
    return outcome


def _submit(
    session_factory: sessionmaker[Session],
    settings: Settings,
    witness: WitnessConfig,
    cp: Checkpoint,
    old: int,
) -> Outcome:
    name, size = witness.name, cp.tree_size
    for _ in range(MAX_ROUNDS):
        try:
            proof = _proof(session_factory, old, size)
        except MailveilError as exc:
            return Outcome(name, "failed", size, old, f"no consistency proof from {old}: {exc}")
        try:
            answer = client.add_checkpoint(
                witness.url, old, proof, cp.note, timeout=settings.witness_timeout_seconds
            )
        except client.WitnessUnreachable as exc:
            return Outcome(name, "unreachable", size, None, str(exc))
        said = answer.body.strip().splitlines()[0][:300] if answer.body.strip() else ""
        if answer.status == 200:
            return _store(session_factory, witness, cp, answer.body)
        if answer.status == 409 and answer.content_type.startswith(SIZE_MEDIA_TYPE):
            theirs = _size(answer.body)
            if theirs is None:
                return Outcome(name, "failed", size, None, f"409 with a bad size: {said}")
            if theirs > size:
                return _alert(witness, "witness_ahead", size, theirs, f"it cosigned {theirs}")
            if theirs == old:
                return Outcome(name, "failed", size, theirs, "409 naming the size sent")
            old = theirs
            continue
        if answer.status in _ALERTS_BY_STATUS:
            return _alert(witness, _ALERTS_BY_STATUS[answer.status], size, old, said)
        return Outcome(name, "failed", size, None, f"HTTP {answer.status}: {said}")
    return Outcome(name, "failed", size, old, "the witness kept answering 409 (a race?)")


def _alert(
    witness: WitnessConfig, reason: str, size: int, witness_size: int | None, detail: str
) -> Outcome:
    alert = WitnessAlert(witness.name, reason, size, witness_size, detail)
    return Outcome(witness.name, "refused", size, witness_size, detail, alert)


def _size(body: str) -> int | None:
    text = body.strip()
    return int(text) if text.isascii() and text.isdigit() else None


def _proof(session_factory: sessionmaker[Session], old: int, size: int) -> list[bytes]:
    if old in (0, size):
        return []
    with session_scope(session_factory) as session:
        result = proofs.consistency_proof(session, old, size)
    return proofs.decode_proof(result["proof"])


def _store(
    session_factory: sessionmaker[Session], witness: WitnessConfig, cp: Checkpoint, body: str
) -> Outcome:
    name, size = witness.name, cp.tree_size
    try:
        lines = parse_signature_lines(body)
        note = parse_note(cp.note)
        opened = open_note(Note(note.text, tuple(lines)), [witness.vkey])
    except NoteError as exc:
        alert = WitnessAlert(name, "bad_cosignature", size, None, str(exc))
        return Outcome(name, "refused", size, None, str(exc), alert)
    signature = opened.verified[0].signature
    timestamp = signature.timestamp or 0
    if not 0 < timestamp <= time.time() + MAX_CLOCK_SKEW_SECONDS:
        detail = f"cosignature timestamp {timestamp} is not a sane time"
        return Outcome(
            name,
            "refused",
            size,
            None,
            detail,
            WitnessAlert(name, "bad_cosignature", size, None, detail),
        )
    values = {
        "tree_size": size,
        "witness": name,
        "key_id": signature.key_id.hex(),
        "timestamp": timestamp,
        "line": signature.line,
        "received_at": datetime.now(UTC),
    }
    with session_scope(session_factory) as session:
        ins = _insert(session, LedgerCosignature)
        session.execute(
            ins.values(values).on_conflict_do_update(
                index_elements=["tree_size", "witness"],
                set_={k: ins.excluded[k] for k in ("key_id", "timestamp", "line", "received_at")},
            )
        )
    return Outcome(name, "cosigned", size, size, f"cosigned at {timestamp}")


def _insert(session: Session, model: type[LedgerCosignature] | type[LedgerWitnessStatus]) -> Any:
    dialect = session.get_bind().dialect.name
    return pg_insert(model) if dialect == "postgresql" else sqlite_insert(model)


def _status(session: Session, witness: WitnessConfig) -> LedgerWitnessStatus:
    """The witness's status row, created on first use (two publishers may race to it)."""
    values = {"witness": witness.name, "vkey": witness.vkey.vkey, "url": witness.url}
    session.execute(
        _insert(session, LedgerWitnessStatus)
        .values(**values, cosigned_size=0, failures=0)
        .on_conflict_do_nothing(index_elements=["witness"])
    )
    row = session.scalars(
        select(LedgerWitnessStatus).where(LedgerWitnessStatus.witness == witness.name)
    ).one()
    if row.vkey != witness.vkey.vkey or row.url != witness.url:
        row.vkey, row.url = witness.vkey.vkey, witness.url
    return row


__all__ = ["Outcome", "PublishReport", "publish_latest", "publish_to"]
