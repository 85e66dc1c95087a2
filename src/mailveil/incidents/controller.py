"""The controller's details every report names (GDPR Art. 33(3)(b): the name and contact
details of the data protection officer or other contact point; Art. 27: the representative
of a controller not established in the EEA).

Settings give the first values (``controller_name``, ``controller_address``,
``breach_contact`` and the others in ``SETTING_OF``); once the privacy officer edits them
they are stored (one versioned row) and each change is a ``report_controller`` ledger entry
naming the fields that changed. Nothing is made up: a detail nobody gave is shown as
missing, and a report missing a required one stays a draft.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts import validation as v
from mailveil.db.base import utcnow
from mailveil.errors import Conflict, InvalidInput
from mailveil.incidents.models import CONTROLLER_ROW, ReportController
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.models import LedgerEntry

FIELDS = (
    "name",
    "address",
    "establishment_country",
    "dpo_name",
    "dpo_email",
    "dpo_phone",
    "representative_name",
    "representative_address",
    "representative_email",
)
LABELS = {
    "name": "controller's name",
    "address": "controller's address",
    "establishment_country": "country of the main establishment",
    "dpo_name": "data protection officer",
    "dpo_email": "contact point's e-mail (DPO or privacy team)",
    "dpo_phone": "contact point's telephone",
    "representative_name": "representative in the EEA (Art. 27)",
    "representative_address": "representative's address",
    "representative_email": "representative's e-mail",
}
REQUIRED = ("name", "address", "dpo_email")
# The setting each field starts from.
SETTING_OF = {
    "name": "controller_name",
    "address": "controller_address",
    "establishment_country": "controller_establishment",
    "dpo_name": "dpo_name",
    "dpo_email": "breach_contact",
    "dpo_phone": "dpo_phone",
    "representative_name": "representative_name",
    "representative_address": "representative_address",
    "representative_email": "representative_email",
}
_LIMITS = {"address": 500, "representative_address": 500, "dpo_phone": 40}
LEDGER_KIND = "report_controller"


@dataclass
class ControllerDetails:
    values: dict[str, str]
    source: str  # "settings" (never edited) or "stored"
    version: int = 0
    updated_at: datetime | None = None
    updated_by: str = ""
    ledger_seq: int | None = None
    invalid: dict[str, str] = field(default_factory=dict)  # a setting that does not validate

    def missing(self, *, needs_representative: bool = False) -> list[str]:
        """Required fields that are empty (or whose setting does not validate)."""
        wanted = list(REQUIRED)
        if needs_representative:
            wanted += ["representative_name", "representative_address"]
        return [f for f in wanted if not self.values.get(f) or f in self.invalid]

    @property
    def contact_point(self) -> str:
        return self.values.get("dpo_email", "")

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.values,
            "source": self.source,
            "version": self.version,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "updated_by": self.updated_by or None,
            "ledger_seq": self.ledger_seq,
            "missing": self.missing(),
            "invalid": dict(self.invalid),
        }


def _multiline(value: Any, what: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    lines = [line.strip() for line in value.strip().replace("\r\n", "\n").split("\n")]
    out = "\n".join(line for line in lines if line)
    if len(out) > limit or any((ord(c) < 32 and c != "\n") or ord(c) == 127 for c in out):
        raise InvalidInput(f"{what} must be at most {limit} characters without control characters")
    return out


def _email(value: Any, what: str) -> str:
    text = v.text(value, what, 320)
    if not text:
        return ""
    try:
        return str(validate_email(text, check_deliverability=False).normalized)
    except EmailNotValidError as exc:
        raise InvalidInput(f"{what} is not an e-mail address: {exc}") from exc


def check_field(name: str, value: Any) -> str:
    """One field, validated and normalised ("" clears it)."""
    what = LABELS.get(name)
    if what is None:
        raise InvalidInput(f"unknown controller field {name!r} (allowed: {', '.join(FIELDS)})")
    if name in ("address", "representative_address"):
        return _multiline(value, what, _LIMITS[name])
    if name.endswith("_email"):
        return _email(value, what)
    if name == "establishment_country":
        text = v.text(value, what, 2)
        return v.country(text) if text else ""
    if name == "dpo_phone":
        text = v.text(value, what, 40)
        if text and not all(c.isdigit() or c in "+-() ./" for c in text):
            raise InvalidInput(f"{what} may hold digits, spaces and + - ( ) . / only")
        return text
    return v.text(value, what, 200)


def _from_settings(settings: Settings) -> ControllerDetails:
    values: dict[str, str] = {}
    invalid: dict[str, str] = {}
    for name, setting in SETTING_OF.items():
        raw = str(getattr(settings, setting, "") or "")
        try:
            values[name] = check_field(name, raw)
        except InvalidInput as exc:
            values[name] = ""
            invalid[name] = f"setting {setting}: {exc.detail}"
    return ControllerDetails(values, "settings", invalid=invalid)


def controller_details(session: Session, settings: Settings) -> ControllerDetails:
    """The details in force: the stored ones once edited, else the settings'."""
    row = session.get(ReportController, CONTROLLER_ROW)
    if row is None:
        return _from_settings(settings)
    return ControllerDetails(
        {name: getattr(row, name) for name in FIELDS},
        "stored",
        row.version,
        row.updated_at,
        row.updated_by,
        row.ledger_seq,
    )


def set_controller(
    session: Session,
    *,
    settings: Settings,
    ledger: Ledger,
    changes: Mapping[str, Any],
    actor: str,
    expected_version: int | None = None,
) -> ControllerDetails:
    """Change some fields (the others keep their value in force), validated, stored and
    written to the ledger. ``expected_version`` refuses the change if someone else saved
    in between. Does not commit."""
    if not changes:
        raise InvalidInput("no controller field to change")
    checked = {name: check_field(name, value) for name, value in changes.items()}
    row = session.get(ReportController, CONTROLLER_ROW, with_for_update=True)
    current = controller_details(session, settings)
    if expected_version is not None and expected_version != current.version:
        raise Conflict(
            f"the controller's details are at version {current.version}, not "
            f"{expected_version}: someone else changed them; reload and try again"
        )
    changed = {k: val for k, val in checked.items() if current.values.get(k) != val}
    if not changed and row is not None:
        return current
    now = utcnow()
    if row is None:
        row = ReportController(id=CONTROLLER_ROW, version=0, **current.values)
        session.add(row)
    for name, value in changed.items():
        setattr(row, name, value)
    row.version += 1
    row.updated_at = now
    row.updated_by = actor
    session.flush()
    row.ledger_seq = ledger.append(
        session,
        [
            Event(
                LEDGER_KIND,
                actor,
                "controller",
                detail={"version": row.version, "changed": changed, "was": current.source},
            )
        ],
    )[0]
    session.flush()
    return controller_details(session, settings)


def controller_history(session: Session, limit: int = 200) -> list[dict[str, Any]]:
    """Every change of the details, newest first, from the ledger."""
    rows = session.scalars(
        select(LedgerEntry)
        .where(LedgerEntry.kind == LEDGER_KIND)
        .order_by(LedgerEntry.seq.desc())
        .limit(v.page_limit(limit))
    )
    return [
        {
            "seq": e.seq,
            "time": e.time.isoformat(),
            "actor": e.actor,
            "version": json.loads(e.detail).get("version"),
            "changed": json.loads(e.detail).get("changed", {}),
        }
        for e in rows
    ]


__all__ = [
    "FIELDS",
    "LABELS",
    "LEDGER_KIND",
    "REQUIRED",
    "SETTING_OF",
    "ControllerDetails",
    "check_field",
    "controller_details",
    "controller_history",
    "set_controller",
]
