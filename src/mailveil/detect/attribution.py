"""How sure each signal is, and the attribution an incident rests on: who was given which
aliases, and who used them.

``strength_of`` reads what a signal already records (how the sender was matched, its SPF,
DKIM and DMARC results, a ranking's score). It is the one place a richer evidence model
(per-piece strength stored on signals and culprits) replaces: shells only call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.contacts.models import Principal
from mailveil.detect.models import Signal

# A sender identity counts as proven only through these: SMTP AUTH with the principal's key,
# a DKIM signature that passed, or DMARC (SPF or DKIM aligned with the From domain).
AUTHENTICATED = "authenticated"
CLAIMED = "claimed"
STATISTICAL = "statistical"
UNATTRIBUTED = "unattributed"


@dataclass(frozen=True)
class Strength:
    """How sure one piece of evidence is: for the alias's owner (the ledger proves whom an
    alias was disclosed to), and for who used it (the sender's identity)."""

    level: str  # authenticated | claimed | statistical | unattributed
    basis: str  # in words, for a person
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "basis": self.basis, "score": self.score}


def _dkim_passed(evidence: dict[str, Any]) -> list[str]:
    out = []
    for item in evidence.get("dkim") or ():
        if isinstance(item, dict) and item.get("result") == "pass" and item.get("d"):
            out.append(str(item["d"]))
    return out


def strength_of(signal: Signal) -> Strength:
    """How sure this signal is about who received the data."""
    evidence = signal.evidence or {}
    if signal.confidence == "ranked":
        p = (evidence.get("ranking") or {}).get("ranked", [{}])
        p_value = p[0].get("p_value") if p and isinstance(p[0], dict) else None
        basis = "overlap of reporters with the customers this principal saw"
        if p_value is not None:
            basis += f" (p = {float(p_value):.1e})"
        return Strength(STATISTICAL, basis, signal.score)
    if signal.confidence == "anomaly":
        return Strength(STATISTICAL, "unusual against the employee's own history and peers",
                        signal.score)  # fmt: skip
    how = str(evidence.get("matched_by") or "")
    if signal.recipient_principal_id is None:
        return Strength(UNATTRIBUTED, "the alias names its source; the sender is unknown")
    if how == "SMTP AUTH":
        return Strength(AUTHENTICATED, "sent with the principal's own credentials (SMTP AUTH)")
    if how.startswith("DKIM d="):
        return Strength(AUTHENTICATED, f"DKIM signature of {how[7:]} verified")
    dmarc = str(evidence.get("dmarc") or "").lower()
    if dmarc.startswith("pass"):
        return Strength(AUTHENTICATED, f"{how or 'sender'}; DMARC passed (aligned SPF or DKIM)")
    if _dkim_passed(evidence):
        return Strength(
            AUTHENTICATED, f"{how}; DKIM verified for " + ", ".join(_dkim_passed(evidence))
        )
    return Strength(CLAIMED, f"{how or 'sender address'} as claimed, not authenticated")


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


__all__ = [
    "AUTHENTICATED",
    "CLAIMED",
    "STATISTICAL",
    "UNATTRIBUTED",
    "Attribution",
    "Link",
    "Strength",
    "attribution",
    "strength_of",
]
