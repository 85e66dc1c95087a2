"""The blast-radius guard: when a send needs a second person, whether its audience matches
what its rule can reach (a mis-targeted send reads differently from a correct large one),
and what the stored assessment says its first stage will do."""

from __future__ import annotations

from typing import Any

from mailveil.config import Settings
from mailveil.notify.models import Send


def blast_radius(
    settings: Settings, audience: int, expected: int | None
) -> tuple[bool, str | None]:
    """(needs a second approver, why)."""
    if audience > settings.notify_blast_cap:
        return True, f"audience {audience} is above the cap of {settings.notify_blast_cap}"
    if expected is None:
        return True, "the template has no send history and no declared expected volume"
    limit = settings.notify_blast_factor * max(expected, 1)
    if audience > limit:
        return True, (
            f"audience {audience} is above {settings.notify_blast_factor:g} x the expected "
            f"volume {expected}"
        )
    return False, None


def targeting(
    settings: Settings, audience: int, eligible: int, ineligible: int, population: int | None
) -> dict[str, Any]:
    """The guard's comparison of the audience with the rule's eligible population: a
    mis-targeted send (many named customers the rule does not cover: the first stage would
    halt) reads differently from a correct large one (the audience is the population)."""
    rate = ineligible / audience if audience else 0.0
    out: dict[str, Any] = {
        "audience": audience,
        "eligible": eligible,
        "rule_population": population,
        "coverage": (eligible / population) if population else None,
        "ineligible_rate": rate,
    }
    if audience and rate > settings.notify_max_ineligible_rate:
        out["verdict"] = "mis-targeted"
        out["summary"] = (
            f"mis-targeted: {ineligible} of {audience} named customers "
            f"({rate:.1%}) are not eligible under the rule (the rule covers "
            f"{population if population is not None else 'an unknown number of'} customers); "
            "the first stage would halt"
        )
    else:
        out["verdict"] = "consistent"
        share = f"{eligible / population:.0%} of " if population else ""
        out["summary"] = (
            f"consistent with the rule: {eligible} eligible, {share}the "
            f"{population if population is not None else '?'} customers the rule covers"
        )
    return out


def halt_forecast(send: Send, counts: dict[str, int] | None = None) -> dict[str, Any] | None:
    """What the stored assessment says the first stage's ineligible gate will find: a
    warning for the approver when it is above the threshold (else None)."""
    counts = counts or {}
    total = sum(counts.values())
    if not total:
        return None
    rate = counts.get("ineligible", 0) / total
    limit = float(send.thresholds.get("ineligible", 1.0))
    if rate <= limit:
        return None
    return {"gate": "ineligible", "rate": rate, "threshold": limit,
            "ineligible": counts.get("ineligible", 0), "recipients": total}  # fmt: skip


__all__ = ["blast_radius", "halt_forecast", "targeting"]
