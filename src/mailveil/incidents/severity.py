"""The severity of a personal data breach by ENISA's method ("Recommendations for a
methodology of the assessment of severity of personal data breaches", working document
v1.0, December 2013):

    SE = DPC × EI + CB

- DPC, data processing context (1-4): the category's basic score (simple data 1, behavioural
  2, financial 3, sensitive 4), raised or lowered by the context (volume, the controller's
  line of business, vulnerable people, invalid or public data), kept within 1-4;
- EI, ease of identification: negligible 0.25, limited 0.5, significant 0.75, maximum 1;
- CB, circumstances of the breach, added up: loss of confidentiality (0.25 exposed without
  evidence of illegal processing, 0.5 disclosed to known or to an unknown number of
  recipients), of integrity (0.25 altered but recoverable, 0.5 not recoverable), of
  availability (0.25 recoverable without difficulty, 0.5 temporarily or fully unavailable),
  and 0.5 for malicious intent;
- levels: below 2 low, below 3 medium, below 4 high, else very high.

mailveil suggests each input from the incident's facts and says why; the privacy officer can
override any of them with a reason (``assessment``), and the report shows which is which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailveil.errors import InvalidInput

DPC_CATEGORIES = {
    "simple": (1, "simple data (contact and biographical details)"),
    "behavioural": (2, "behavioural data (location, traffic, preferences, habits)"),
    "financial": (3, "financial data"),
    "sensitive": (4, "sensitive data (health, political or religious beliefs, sexual life)"),
}
EI_LEVELS = {
    "negligible": (0.25, "negligible"),
    "limited": (0.5, "limited"),
    "significant": (0.75, "significant"),
    "maximum": (1.0, "maximum"),
}
CONFIDENTIALITY = {
    "none": (0.0, "no loss of confidentiality"),
    "exposed": (0.25, "exposed to confidentiality risks, no evidence of illegal processing"),
    "known_recipients": (0.5, "disclosed to a number of known recipients"),
    "unknown_recipients": (0.5, "disclosed to an unknown number of recipients"),
}
INTEGRITY = {
    "none": (0.0, "no loss of integrity"),
    "recoverable": (0.25, "altered, possibly used wrongly, recoverable"),
    "irrecoverable": (0.5, "altered, possibly used wrongly, not recoverable"),
}
AVAILABILITY = {
    "none": (0.0, "no loss of availability"),
    "recoverable": (0.25, "unavailable, recoverable without difficulty"),
    "temporary": (0.5, "temporarily unavailable"),
    "permanent": (0.5, "fully unavailable, cannot be recovered"),
}
MALICIOUS = 0.5
LEVELS = (
    (2.0, "low", "people will not be affected or may meet a few inconveniences they overcome"),
    (
        3.0,
        "medium",
        "people may meet significant inconveniences they overcome with some difficulty",
    ),
    (4.0, "high", "people may meet significant consequences they overcome with serious difficulty"),
    (
        float("inf"),
        "very high",
        "people may meet significant, or even irreversible, consequences they may not overcome",
    ),
)
CHOICES: dict[str, dict[str, tuple[Any, str]]] = {
    "dpc_category": DPC_CATEGORIES,
    "ei": EI_LEVELS,
    "confidentiality": CONFIDENTIALITY,
    "integrity": INTEGRITY,
    "availability": AVAILABILITY,
}
# Every input, and the reason field that goes with it.
INPUTS = (
    "dpc_category",
    "dpc_adjustment",
    "ei",
    "confidentiality",
    "integrity",
    "availability",
    "malicious",
)
LABELS = {
    "dpc_category": "Data processing context: category",
    "dpc_adjustment": "Data processing context: adjustment for the context",
    "ei": "Ease of identification",
    "confidentiality": "Circumstances: loss of confidentiality",
    "integrity": "Circumstances: loss of integrity",
    "availability": "Circumstances: loss of availability",
    "malicious": "Circumstances: malicious intent",
}


def _words(name: str, value: Any) -> str:
    if name in CHOICES:
        return str(CHOICES[name][value][1])
    if name == "malicious":
        return "yes (+0.5)" if value else "no"
    return f"{value:+d}" if value else "none"


@dataclass(frozen=True)
class Facts:
    """What the incident says about itself, for the suggested inputs."""

    real_address: int  # people whose own address was seen
    aliases: int  # people whose alias was held
    kinds: frozenset[str]  # signal kinds
    recipients_known: bool  # the spam's sender matched a known principal


def suggest(facts: Facts) -> dict[str, tuple[Any, str]]:
    """Each input's suggested value and why."""
    passed_on = bool(facts.kinds & {"stranger_at_alias", "canary_hit", "abuse_report"})
    out: dict[str, tuple[Any, str]] = {
        "dpc_category": ("simple", "an e-mail alias or address is contact data"),
        "dpc_adjustment": (0, "no aggravating or mitigating context recorded"),
    }
    if facts.real_address:
        out["ei"] = ("significant", "an e-mail address often names the person it belongs to")
    else:
        out["ei"] = (
            "limited",
            "an alias is random and reaches the person only through mailveil; whoever passed "
            "it on may have passed the name from the order with it",
        )
    if passed_on:
        level = "known_recipients" if facts.recipients_known else "unknown_recipients"
        out["confidentiality"] = (level, "the data reached third parties who used it")
        out["malicious"] = (
            True,
            "the data were passed on to others without permission (ENISA counts selling lists "
            "of personal data as malicious)",
        )
    else:
        out["confidentiality"] = ("exposed", "unusual access; no evidence the data were used")
        out["malicious"] = (False, "no evidence of intent to harm")
    out["integrity"] = ("none", "mailveil's records were not altered")
    out["availability"] = ("none", "the data stayed available to the customers and to us")
    return out


def check_input(name: str, value: Any) -> Any:
    """One officer-set input, validated (InvalidInput names what is allowed)."""
    if name in CHOICES:
        if value not in CHOICES[name]:
            allowed = ", ".join(CHOICES[name])
            raise InvalidInput(f"severity input {name} must be one of {allowed}")
        return value
    if name == "dpc_adjustment":
        if isinstance(value, bool) or not isinstance(value, int) or not -3 <= value <= 3:
            raise InvalidInput("severity input dpc_adjustment must be a whole number from -3 to 3")
        return value
    if name == "malicious":
        if not isinstance(value, bool):
            raise InvalidInput("severity input malicious must be true or false")
        return value
    raise InvalidInput(f"unknown severity input {name!r} (allowed: {', '.join(INPUTS)})")


def level_of(score: float) -> tuple[str, str]:
    for bound, name, meaning in LEVELS:
        if score < bound:
            return name, meaning
    raise AssertionError("unreachable: the last bound is infinite")


def _num(x: float) -> str:
    return f"{x:g}"


def assess(facts: Facts, officer: dict[str, Any], people: int) -> dict[str, Any]:
    """The score with every input shown: its value, whether it was suggested or set by the
    officer, and why. ``officer`` maps an input to {"value", "reason", "by", "at"}."""
    suggested = suggest(facts)
    values: dict[str, Any] = {}
    inputs = []
    for name in INPUTS:
        chosen = officer.get(name)
        value, reason = (chosen["value"], chosen["reason"]) if chosen else suggested[name]
        values[name] = value
        inputs.append(
            {
                "input": name,
                "label": LABELS[name],
                "value": value,
                "words": _words(name, value),
                "source": "officer" if chosen else "suggested",
                "reason": reason,
                "set_by": chosen.get("by") if chosen else None,
                "set_at": chosen.get("at") if chosen else None,
            }
        )
    base = DPC_CATEGORIES[values["dpc_category"]][0]
    dpc = min(4, max(1, base + values["dpc_adjustment"]))
    ei = EI_LEVELS[values["ei"]][0]
    cb = (
        CONFIDENTIALITY[values["confidentiality"]][0]
        + INTEGRITY[values["integrity"]][0]
        + AVAILABILITY[values["availability"]][0]
        + (MALICIOUS if values["malicious"] else 0.0)
    )
    score = round(dpc * ei + cb, 2)
    level, meaning = level_of(score)
    return {
        "method": "ENISA, Recommendations for a methodology of the assessment of severity of "
        "personal data breaches (v1.0, December 2013)",
        "dpc": dpc,
        "dpc_base": base,
        "ei": ei,
        "cb": cb,
        "score": score,
        "level": level,
        "meaning": meaning,
        "formula": f"SE = DPC × EI + CB = {dpc} × {_num(ei)} + {_num(cb)} = {_num(score)}",
        "inputs": inputs,
        "outside_the_score": (
            f"the number of people ({people:,}) and whether the data were unintelligible are "
            "weighed separately, as ENISA advises"
        ),
        "suggests_telling_people": level in ("high", "very high"),
    }


__all__ = [
    "AVAILABILITY",
    "CHOICES",
    "CONFIDENTIALITY",
    "DPC_CATEGORIES",
    "EI_LEVELS",
    "INPUTS",
    "INTEGRITY",
    "Facts",
    "assess",
    "check_input",
    "level_of",
    "suggest",
]
