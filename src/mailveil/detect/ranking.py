"""Guilt ranking for reports about real addresses.

Given the customers who reported mail from one sender S, every principal that saw any of
them is scored by how improbable its overlap with those customers is, given how many
customers it saw: under "this principal's customers are a random draw of n from N", the
overlap with the K reporters follows a hypergeometric law, and the score is the upper tail
P(X >= k) (reported as -log10). A principal that saw 30 of 40 reporters out of 200 customers
in a marketplace of a million is not chance; one that saw 30 of 40 out of 600,000 may be.

Overlap a legitimate relationship explains is left out first: when S is a known principal,
reporters who are its own customers (an alias of theirs was disclosed to S, or they ordered
from it) are dropped, so a seller's own buyers complaining about its newsletter do not
accuse anyone. "Saw" means an alias was disclosed to the principal (the aliases table is
the ledger's disclosures, one row per pair) or the principal viewed the real address
through a reveal.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import hypergeom
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailveil.access.models import RevealRequest
from mailveil.contacts.models import Alias, Customer, Order, Principal
from mailveil.policy.facts import chunks


@dataclass(frozen=True)
class Ranked:
    principal_id: int
    kind: str
    name: str
    overlap: int  # reporters this principal saw
    saw: int  # customers it saw in all
    expected: float  # overlap expected by chance
    p_value: float
    score: float  # -log10(p)
    overlap_customers: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "principal_id": self.principal_id,
            "kind": self.kind,
            "name": self.name,
            "overlap": self.overlap,
            "saw": self.saw,
            "expected": round(self.expected, 4),
            "p_value": self.p_value,
            "score": round(self.score, 3),
            "overlap_customers": list(self.overlap_customers[:50]),
        }


@dataclass
class Ranking:
    reporters: int  # after leaving out explained overlap
    explained: int  # reporters left out as the sender's own customers
    population: int
    candidates: int = 0  # principals scored (the Bonferroni count)
    basis: str = "any exposure"  # or "reveals": who saw the reporters' real addresses
    ranked: list[Ranked] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reporters": self.reporters,
            "explained": self.explained,
            "population": self.population,
            "candidates": self.candidates,
            "basis": self.basis,
            "ranked": [r.to_dict() for r in self.ranked],
        }


def _explained(session: Session, sender_principal: int, reporters: set[int]) -> set[int]:
    out: set[int] = set()
    for part in chunks(sorted(reporters)):
        out.update(
            session.scalars(
                select(Alias.customer_id).where(
                    Alias.principal_id == sender_principal, Alias.customer_id.in_(part)
                )
            )
        )
        out.update(
            session.scalars(
                select(Order.customer_id).where(
                    Order.seller_id == sender_principal, Order.customer_id.in_(part)
                )
            )
        )
    return out


def rank_principals(
    session: Session,
    reporters: Sequence[int],
    *,
    sender_principal: int | None = None,
    top: int = 10,
    real_addresses: bool = False,
) -> Ranking:
    """Rank every principal that saw any reporter; most improbable overlap first.

    ``real_addresses``: the reported mail reached the customers' own addresses, which only a
    reveal ever shows; when principals viewed some of the reporters' real addresses, only
    they are candidates and only their reveals count (aliases never carried a real address,
    and counting them lets colleagues who served the same customers look guilty). With no
    such principal, every exposure counts (the basis is in ``Ranking.basis``)."""
    wanted = set(reporters)
    explained = _explained(session, sender_principal, wanted) if sender_principal else set()
    kept = wanted - explained
    population = int(
        session.scalar(
            select(func.count()).select_from(Customer).where(Customer.is_canary.is_(False))
        )
        or 0
    )
    ranking = Ranking(len(kept), len(explained), population)
    if not kept or population == 0:
        return ranking
    seen_by: dict[int, set[int]] = {}
    revealed: dict[int, set[int]] = {}
    for part in chunks(sorted(kept)):
        for pid, cid in session.execute(
            select(Alias.principal_id, Alias.customer_id).where(Alias.customer_id.in_(part))
        ):
            seen_by.setdefault(pid, set()).add(cid)
        for pid, cid in session.execute(
            select(RevealRequest.requester_id, RevealRequest.customer_id).where(
                RevealRequest.customer_id.in_(part), RevealRequest.views_used > 0
            )
        ):
            seen_by.setdefault(pid, set()).add(cid)
            revealed.setdefault(pid, set()).add(cid)
    if sender_principal is not None:
        seen_by.pop(sender_principal, None)
        revealed.pop(sender_principal, None)
    reveals_only = real_addresses and bool(revealed)
    if reveals_only:
        seen_by = revealed
        ranking.basis = "reveals"
    saw: Counter[int] = Counter()
    candidates = sorted(seen_by)
    for part in chunks(candidates):
        if not reveals_only:  # with reveals as the basis, only revealed addresses count
            for pid, n in session.execute(
                select(Alias.principal_id, func.count())
                .where(Alias.principal_id.in_(part))
                .group_by(Alias.principal_id)
            ):
                saw[pid] += int(n)
        for pid, n in session.execute(
            select(RevealRequest.requester_id, func.count(func.distinct(RevealRequest.customer_id)))
            .where(RevealRequest.requester_id.in_(part), RevealRequest.views_used > 0)
            .group_by(RevealRequest.requester_id)
        ):
            saw[pid] += int(n)
    names = {
        pid: (kind, name or ext)
        for part in chunks(candidates)
        for pid, kind, name, ext in session.execute(
            select(
                Principal.id, Principal.kind, Principal.display_name, Principal.external_id
            ).where(Principal.id.in_(part))
        )
    }
    k_total = len(kept)
    pids = list(seen_by)
    ks = np.array([len(seen_by[pid]) for pid in pids], dtype=np.int64)
    ns = np.array([max(saw[pid], len(seen_by[pid])) for pid in pids], dtype=np.int64)
    # One array call for every candidate (thousands at scale), not one scipy call each.
    ps = np.clip(hypergeom.sf(ks - 1, population, k_total, np.minimum(ns, population)), 0.0, 1.0)
    scored: list[Ranked] = []
    for pid, k, n, p in zip(pids, ks.tolist(), ns.tolist(), ps.tolist(), strict=True):
        score = -math.log10(p) if p > 0 else 300.0
        kind, name = names.get(pid, ("unknown", str(pid)))
        scored.append(
            Ranked(
                pid,
                kind,
                name,
                k,
                n,
                n * k_total / population,
                p,
                score,
                tuple(sorted(seen_by[pid])),
            )
        )
    scored.sort(key=lambda r: (-r.score, -r.overlap, r.principal_id))
    ranking.candidates = len(scored)
    ranking.ranked = scored[:top]
    return ranking


def is_significant(ranking: Ranking, *, alpha: float = 1e-6, min_reporters: int = 5) -> bool:
    """Whether the top principal is beyond chance: Bonferroni over every principal scored,
    and enough reporters that a handful of coincidences cannot accuse anyone."""
    if ranking.reporters < min_reporters or not ranking.ranked:
        return False
    top = ranking.ranked[0]
    return top.p_value * max(1, ranking.candidates) < alpha and top.overlap >= min_reporters // 2


__all__ = ["Ranked", "Ranking", "is_significant", "rank_principals"]
