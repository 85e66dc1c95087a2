"""How sure each piece of evidence is: one model for signals, culprits, bundles, API and CLI.

Verdicts here get people suspended, so every piece of evidence that names (or could name) a
principal says how it was established. There are four strengths, strongest first:

``relay-record``
    A fact mailveil itself minted and keeps: a disclosure in the ledger (the alias was given
    to this principal), the relay's own record of mail at an alias, a canary planted for this
    principal, the relay's Message-IDs, VERP tokens and DKIM signatures.
``authenticated``
    The sender proved who it is to the relay: SMTP AUTH with the principal's key, or an SPF
    or DKIM pass aligned with the From domain (DMARC alignment) on a From that is one of the
    principal's sending addresses or domains. A DKIM pass counts only when the signature
    names the address the mail arrived at (its signed To/Cc), so a replayed copy of the
    principal's mail to someone else does not speak for it.
``statistical``
    An inference from counts: guilt ranking of abuse reports (``score`` is -log10 p), an
    access-anomaly score, a threshold of refused requests.
``claimed``
    What a message or a report says about itself and nobody checked: a From or envelope
    sender without an aligned pass, a DKIM pass that does not cover the recipient, a
    customer's report of mail the relay has no record of. Shown, with its reason; it never
    makes a culprit.

A *piece* (``Piece``) is one such statement about one principal in one role::

    {
      "role": "source" | "recipient",      # whom the data was disclosed to | who received it
      "principal_id": 12 | null,          # null: the identity matched no principal
      "strength": "relay-record" | "authenticated" | "statistical" | "claimed",
      "basis": "alias-disclosure",         # a stable code: BASES below
      "reason": "…",                       # one sentence for people: why it counts or not
      "counted": true,                     # it names the principal as a culprit
      "weak": false,                       # counted, but containment needs a second person
      "score": null | 7.3,                 # statistical pieces: the score
      "entry": 1042 | null                 # the ledger entry it rests on
    }

A signal's ``pieces`` list every one, counted or not; its source and recipient principals are
set only from counted pieces. A culprit carries the strongest strength that named it and
whether any of its counted pieces is *strong* (``counted`` and not ``weak``). Containment of a
culprit with no strong piece (named only by statistics, or by evidence a customer's own side
could explain) asks for a second person's confirmation (``incidents.containment``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Strength = Literal["relay-record", "authenticated", "statistical", "claimed"]
Role = Literal["source", "recipient"]
STRENGTHS: tuple[Strength, ...] = ("relay-record", "authenticated", "statistical", "claimed")
COUNTING: tuple[Strength, ...] = ("relay-record", "authenticated", "statistical")
ROLES: tuple[Role, ...] = ("source", "recipient")

# Every basis a piece may give, with the strength it carries. Kept in one table so the API
# documentation, the console and the bundle verifier read the same words.
BASES: dict[str, tuple[Strength, str]] = {
    "alias-disclosure": ("relay-record", "the alias was disclosed to the principal (ledger)"),
    "canary": ("relay-record", "a canary planted for the principal was written to"),
    "relay-message": ("relay-record", "the relay delivered the message from the principal"),
    "smtp-auth": ("authenticated", "the sender logged in to the relay as the principal"),
    "spf-aligned": ("authenticated", "SPF passed for the From domain (aligned)"),
    "dkim-aligned": ("authenticated", "DKIM passed for the From domain, signing this address"),
    "guilt-ranking": ("statistical", "improbable overlap with the reporting customers"),
    "access-anomaly": ("statistical", "access far outside the employee's own history"),
    "refusal-count": ("statistical", "many refused access attempts"),
    "header-from": ("claimed", "the From or envelope sender names the principal, unproven"),
    "dkim-unbound": ("claimed", "a DKIM signature of the principal that does not bind"),
    "customer-report": ("claimed", "a customer's report the relay's records do not confirm"),
    "explained": ("claimed", "the evidence is explained without a leak by this principal"),
}
_RANK: dict[str, int] = {s: i for i, s in enumerate(STRENGTHS)}


@dataclass(frozen=True)
class Piece:
    """One piece of evidence about one principal (module docstring)."""

    role: Role
    principal_id: int | None
    strength: Strength
    basis: str
    reason: str
    counted: bool = False
    weak: bool = False
    score: float | None = None
    entry: int | None = None

    def __post_init__(self) -> None:
        if self.basis not in BASES:
            raise ValueError(f"unknown evidence basis {self.basis!r}")
        if self.counted and (self.strength == "claimed" or self.principal_id is None):
            raise ValueError("a claimed piece, or one naming nobody, never counts")

    @property
    def strong(self) -> bool:
        return self.counted and not self.weak

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "principal_id": self.principal_id,
            "strength": self.strength,
            "basis": self.basis,
            "reason": self.reason[:500],
            "counted": self.counted,
            "weak": self.weak,
            "score": self.score,
            "entry": self.entry,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Piece:
        return cls(
            role=data["role"],
            principal_id=data.get("principal_id"),
            strength=data["strength"],
            basis=data["basis"],
            reason=str(data.get("reason") or ""),
            counted=bool(data.get("counted")),
            weak=bool(data.get("weak")),
            score=data.get("score"),
            entry=data.get("entry"),
        )


def stronger(a: str | None, b: str | None) -> str | None:
    """The stronger of two strengths (None is weaker than any)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if _RANK.get(a, 99) <= _RANK.get(b, 99) else b


def counted(pieces: Iterable[Piece], role: Role) -> Piece | None:
    """The counted piece of ``role`` that names its principal, strongest first."""
    found = [p for p in pieces if p.role == role and p.counted]
    found.sort(key=lambda p: (_RANK[p.strength], p.weak))
    return found[0] if found else None


def pieces_of(evidence: dict[str, Any] | None) -> list[Piece]:
    """The pieces stored in a signal's evidence (older signals have none)."""
    raw = (evidence or {}).get("pieces") or []
    out: list[Piece] = []
    for item in raw:
        try:
            out.append(Piece.from_dict(item))
        except (KeyError, TypeError, ValueError):
            continue  # a piece this version cannot read is not evidence
    return out


def leaf_supports(piece: dict[str, Any], leaf: dict[str, Any]) -> tuple[bool, str]:
    """Whether a counted piece's strength is borne out by the ledger entry it rests on
    (a leaf as hashed: kind, actor, detail...). Used by the bundle verifier, which has no
    database: it checks what an entry can show, and that nothing claimed counts."""
    strength, basis = piece.get("strength"), piece.get("basis")
    if strength not in COUNTING or BASES.get(str(basis), ("",))[0] != strength:
        return False, f"a {strength} piece with basis {basis} does not count"
    detail = leaf.get("detail") if isinstance(leaf.get("detail"), dict) else {}
    assert isinstance(detail, dict)
    who = f"principal:{piece.get('principal_id')}"
    if basis == "smtp-auth":
        ok = detail.get("authenticated_principal") == who
        return ok, "the entry records that SMTP AUTH" if ok else "no SMTP AUTH as it recorded"
    if basis == "spf-aligned":
        ok = detail.get("spf") == "pass" and detail.get("spf_aligned") is True
        return ok, "the entry records an aligned SPF pass" if ok else "no aligned SPF pass"
    if basis == "dkim-aligned":
        ok = any(
            isinstance(d, dict)
            and d.get("result") == "pass"
            and d.get("aligned") is True
            and d.get("covers") == "rcpt"
            for d in detail.get("dkim") or ()
        )
        return ok, "the entry records a bound DKIM pass" if ok else "no aligned, bound DKIM pass"
    if basis == "relay-message":
        ok = leaf.get("kind") == "message" and leaf.get("actor") == who
        return ok, "the relay recorded the message as the principal's" if ok else "not its"
    return True, f"{basis}: {BASES[str(basis)][1]}"


def describe() -> dict[str, Any]:
    """The model as data (``GET /v1/evidence/strengths``, the console's legend)."""
    return {
        "strengths": list(STRENGTHS),
        "counting": list(COUNTING),
        "roles": list(ROLES),
        "bases": {k: {"strength": s, "meaning": m} for k, (s, m) in BASES.items()},
    }


__all__ = [
    "BASES",
    "COUNTING",
    "ROLES",
    "STRENGTHS",
    "Piece",
    "Role",
    "Strength",
    "counted",
    "describe",
    "leaf_supports",
    "pieces_of",
    "stronger",
]
