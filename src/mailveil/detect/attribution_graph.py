"""The attribution an incident rests on, as the console draws it: who was given which
aliases, who used them, and how sure each piece is.

How sure a signal is comes from the evidence model in ``detect.strength`` (the pieces stored
on each signal by the scan and the report intake); ``strength_of`` only picks the piece a
person should see first, so the console and the API never judge evidence a second way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.contacts.models import Principal
from mailveil.detect.models import Signal
from mailveil.detect.strength import Role, counted, pieces_of

# Levels a person sees: the model's four strengths, and "unattributed" when no piece names
# who received the data (the alias still names its source).
UNATTRIBUTED = "unattributed"


@dataclass(frozen=True)
class Strength:
    """How sure a signal is about who received the data, in words for a person."""

    level: str  # relay-record | authenticated | statistical | claimed | unattributed
    basis: str
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "basis": self.basis, "score": self.score}


def strength_of(signal: Signal) -> Strength:
    """The strongest counted piece about who received the data; failing that, why nothing
    counted (a claimed identity with its reason); failing that, the source's piece."""
    pieces = pieces_of(signal.evidence)
    roles: tuple[Role, ...] = ("recipient", "source")
    for role in roles:
        piece = counted(pieces, role)
        if piece is not None and (role == "recipient" or piece.strength == "statistical"):
            return Strength(piece.strength, piece.reason, piece.score)
    claimed = [p for p in pieces if p.role == "recipient" and not p.counted]
    if claimed:
        return Strength("claimed", claimed[0].reason, claimed[0].score)
    return Strength(UNATTRIBUTED, "the alias names its source; nothing names who used it")


@dataclass(frozen=True)
class Link:
    """One alias: the principal it was disclosed to, and who wrote to it."""

    source_id: int | None
    alias: str
    user: str  # "principal:<id>" or the outside sender as recorded
    strength: str


@dataclass
class Attribution:
    principals: dict[int, str] = field(default_factory=dict)  # id -> "kind name"
    links: list[Link] = field(default_factory=list)
    more_aliases: int = 0  # aliases left out of ``links`` (the graph shows a sample)


def attribution(session: Session, incident_id: int, *, aliases: int = 12) -> Attribution:
    """The incident's aliases (up to ``aliases`` of them) with whom each was given to and
    who used it, from its signals."""
    out = Attribution()
    seen: dict[str, set[str]] = {}
    signals = session.scalars(
        select(Signal)
        .where(Signal.incident_id == incident_id, Signal.triage != "dismissed")
        .order_by(Signal.id)
    ).all()
    # Who wrote to an alias is best told by the relay's own record of the mail (strangers,
    # canaries); a customer's report of the same mail only adds a sender when none is known.
    for signal in sorted(signals, key=lambda s: (s.kind == "abuse_report", s.id)):
        if not signal.alias or (signal.kind == "abuse_report" and seen.get(signal.alias)):
            continue
        evidence = signal.evidence or {}
        if signal.recipient_principal_id is not None:
            user = f"principal:{signal.recipient_principal_id}"
        else:
            user = str(
                evidence.get("envelope_from")
                or evidence.get("header_from")
                or evidence.get("sender")
                or "unknown sender"
            )
        users = seen.setdefault(signal.alias, set())
        if user in users:
            continue
        if len(seen) > aliases and not users:
            out.more_aliases += 1
            del seen[signal.alias]
            continue
        users.add(user)
        out.links.append(
            Link(signal.source_principal_id, signal.alias, user, strength_of(signal).level)
        )
    ids = {link.source_id for link in out.links if link.source_id is not None}
    ids |= {
        int(link.user.split(":")[1]) for link in out.links if link.user.startswith("principal:")
    }
    for p in session.scalars(select(Principal).where(Principal.id.in_(ids or {-1}))):
        out.principals[p.id] = f"{p.kind} {p.display_name or p.external_id}"
    return out


__all__ = ["UNATTRIBUTED", "Attribution", "Link", "Strength", "attribution", "strength_of"]
