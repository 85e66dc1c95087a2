"""The parts of the report told from the ledger, in words a person reads: the status history,
the measures taken, and whether and when the affected people were told."""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mailveil.auth.models import ApiKey
from mailveil.incidents import wording as w
from mailveil.ledger.models import LedgerEntry
from mailveil.notify.models import Send

SEND_WORDS = {
    "awaiting_approval": "waiting for a second person's approval",
    "ready": "approved, not started",
    "running": "being sent",
    "completed": "sent",
    "halted": "halted by a gate",
    "killed": "stopped",
}


class Actors:
    """Ledger actors in words: "API key 7 (Privacy team)", "alice (command line)"."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._keys: dict[int, str] = {}

    def words(self, actor: str | None) -> str:
        if not actor or actor == "system":
            return "mailveil (automatically)"
        kind, _, ref = actor.partition(":")
        if kind == "apikey" and ref.isdigit():
            key = int(ref)
            if key not in self._keys:
                label = self.session.scalar(select(ApiKey.label).where(ApiKey.id == key))
                self._keys[key] = f"API key {key}" + (f" ({label})" if label else "")
            return self._keys[key]
        if kind == "operator":
            return f"{ref} (command line)"
        return actor


def incident_entries(
    session: Session, incident_id: int, kinds: tuple[str, ...]
) -> list[LedgerEntry]:
    """The incident's own entries of these kinds, in ledger order."""
    markers = (f'"incident":{incident_id},', f'"incident":{incident_id}}}')
    return list(
        session.scalars(
            select(LedgerEntry)
            .where(
                LedgerEntry.kind.in_(kinds),
                or_(
                    LedgerEntry.subject == f"incident:{incident_id}",
                    or_(*(LedgerEntry.detail.contains(m) for m in markers)),
                ),
            )
            .order_by(LedgerEntry.seq)
        )
    )


def _containment_words(d: dict[str, Any]) -> str:
    suspended = len(d.get("suspended", []))
    already = len(d.get("already_suspended", []))
    parts = [
        f"{w.plural(suspended, 'culprit')} suspended"
        + (f" ({already} already {'was' if already == 1 else 'were'})" if already else ""),
        f"{w.plural(int(d.get('aliases_revoked', 0)), 'alias', 'aliases')} revoked",
        f"{w.plural(int(d.get('reveals_revoked', 0)), 'reveal grant')} revoked",
        f"{w.plural(int(d.get('sends_cancelled', 0)), 'send')} stopped",
    ]
    return "Contained: " + w.join(parts)


def history_and_measures(
    session: Session, incident_id: int, tz: ZoneInfo, actors: Actors
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(status history, measures taken), each item {"at", "at_text", "by", "what"}."""
    history, measures = [], []
    for e in incident_entries(
        session, incident_id, ("incident_opened", "incident_status", "incident_action", "notice")
    ):
        d = json.loads(e.detail)
        item = {
            "at": e.time.isoformat(),
            "at_text": w.when(e.time, tz),
            "by": actors.words(e.actor),
            "seq": e.seq,
        }
        if e.kind == "incident_opened":
            history.append({**item, "what": "Opened on the first evidence", "reason": ""})
        elif e.kind == "incident_status":
            what = f"{w.status_words(str(d.get('from')))} → {w.status_words(str(d.get('to')))}"
            history.append({**item, "what": what.capitalize(), "reason": str(d.get("reason", ""))})
        elif e.kind == "incident_action" and d.get("action") == "contain":
            history.append(
                {
                    **item,
                    "what": f"{w.status_words(str(d.get('from')))} → contained".capitalize(),
                    "reason": str(d.get("reason", "")),
                }
            )
            measures.append(
                {**item, "what": _containment_words(d), "reason": str(d.get("reason", ""))}
            )
        elif e.kind == "notice":
            people = w.plural(int(d.get("customers", 0)), "person")
            measures.append(
                {
                    **item,
                    "what": f"Breach notices prepared for {people} (send {d.get('send')})",
                    "reason": "",
                }
            )
    return history, measures


def people_told(session: Session, incident_id: int, tz: ZoneInfo) -> dict[str, Any]:
    """Whether and when the affected people were told: each notice round with its send's
    state."""
    rounds = []
    for e in incident_entries(session, incident_id, ("notice",)):
        d = json.loads(e.detail)
        send = session.get(Send, int(d["send"])) if d.get("send") is not None else None
        status = send.status if send else "unknown"
        rounds.append(
            {
                "at": e.time.isoformat(),
                "at_text": w.when(e.time, tz),
                "send": d.get("send"),
                "people": int(d.get("customers", 0)),
                "send_status": status,
                "send_words": SEND_WORDS.get(status, status),
            }
        )
    if not rounds:
        text = "not yet: no breach notice has been prepared"
    else:
        told = sum(r["people"] for r in rounds if r["send_status"] == "completed")
        total = sum(r["people"] for r in rounds)
        first = rounds[0]["at_text"]
        text = (
            f"notices prepared from {first} for {w.plural(total, 'person')}; "
            f"{w.plural(told, 'person')} sent so far"
        )
    return {"rounds": rounds, "text": text, "first_at": rounds[0]["at"] if rounds else None}


__all__ = ["SEND_WORDS", "Actors", "history_and_measures", "incident_entries", "people_told"]
