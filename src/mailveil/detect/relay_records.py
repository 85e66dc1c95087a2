"""Is a message one the relay itself delivered? Answered from the relay's own records.

A framer's easiest tools are copies of real mail: a customer forwards a seller's ordinary
message to the abuse mailbox, or sends its exact bytes again to their own alias from outside.
Header text proves nothing here (a forwarder may rewrite any of it), so a message is taken
for the relay's own only on facts the relay minted and keeps:

* ``message-id``: the Message-ID the relay wrote on the delivered copy (128 random bits on
  the relay domain), found in ``relay_messages``;
* ``verp``: a ``bounce+<token><tag>@<relay domain>`` envelope sender (kept as Return-Path by
  the customer's mailbox) whose tag verifies under the relay's VERP key;
* ``relay-dkim``: the relay's own DKIM signature verifies (checked by the relay, which holds
  the bytes; ``relay.relay_copy``);
* ``visible-fields``: an inline forward shows no Message-ID or Return-Path, only what a mail
  client prints. When its From is a reverse alias and its To that same pair's alias, the
  relay's ``relay_messages`` say whether (and when) the relay delivered mail between them;
  the message nearest the forward's Date is the one meant (the latest, when none is near
  the Date the sender's clock wrote). The header text only chooses
  where to look: what it finds is the relay's record, and it can only ever make a report a
  complaint about ordinary mail, never an accusation.

A copy of a message the relay delivered from a principal names that principal as the sender
of ordinary mail, never as a leak. A copy of a stranger's message the relay delivered with a
warning (banner mode) points back to that stranger's ledger entry instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.contacts.models import Alias
from mailveil.ledger.models import LedgerEntry
from mailveil.relay.messages import VerpKey, verify_bounce_local
from mailveil.relay.models import RelayMessage

# What new_message_id writes: 32 hex digits at the relay domain.
_RELAY_MESSAGE_ID = re.compile(r"<?\s*([0-9a-f]{32})@([A-Za-z0-9.-]{1,253})\s*>?")
MAX_CANDIDATES = 20
# How far a forward's Date may be from the relay's record of the message (clock skew, time
# zones a client printed wrongly, the customer's own delay before forwarding is irrelevant:
# the Date is the original's).
VISIBLE_DATE_SLACK = timedelta(days=2)


@dataclass(frozen=True)
class RelayRecord:
    """A relayed message found by the relay's own facts (``basis``)."""

    token: str
    principal_id: int
    customer_id: int
    alias: str
    direction: str
    basis: tuple[str, ...]
    stranger_entry: int | None = None  # the stranger_at_alias entry of a bannered message

    @property
    def from_principal(self) -> bool:
        """The principal's own mail to its customer (not a stranger's, delivered with a
        warning; not the customer's own mail to the principal)."""
        return self.direction == "to_customer" and self.stranger_entry is None

    def to_detail(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "principal": f"principal:{self.principal_id}",
            "customer": f"customer:{self.customer_id}",
            "alias": self.alias,
            "direction": self.direction,
            "basis": list(self.basis),
            "stranger_entry": self.stranger_entry,
        }


def relay_message_ids(values: Iterable[str | None], relay_domain: str) -> list[str]:
    """Message-IDs of the relay's shape among ``values``, as stored (``<hex@domain>``)."""
    domain = relay_domain.lower().rstrip(".")
    out: list[str] = []
    for value in values:
        for match in _RELAY_MESSAGE_ID.finditer((value or "")[:2000]):
            if match.group(2).lower().rstrip(".") == domain:
                out.append(f"<{match.group(1)}@{domain}>")
    return list(dict.fromkeys(out))[:MAX_CANDIDATES]


def verp_tokens(values: Iterable[str | None], relay_domain: str, verp_key: VerpKey) -> list[str]:
    """Tokens of VERP addresses among ``values`` whose tag verifies."""
    domain = relay_domain.lower().rstrip(".")
    out: list[str] = []
    for value in values:
        address = (value or "").strip().strip("<>").strip()[:320]
        local, at, host = address.rpartition("@")
        if at and host.lower().rstrip(".") == domain:
            token = verify_bounce_local(verp_key, local)
            if token is not None:
                out.append(token)
    return list(dict.fromkeys(out))[:MAX_CANDIDATES]


def _stranger_entry(session: Session, alias: str, token: str) -> int | None:
    """The stranger_at_alias entry that delivered ``token`` with a warning, if any."""
    rows = session.execute(
        select(LedgerEntry.seq, LedgerEntry.detail).where(
            LedgerEntry.alias == alias, LedgerEntry.kind == "stranger_at_alias"
        )
    ).all()
    for seq, detail in rows:
        if f'"{token}"' in detail and json.loads(detail).get("relay_message") == token:
            return int(seq)
    return None


def find_relayed(
    session: Session,
    *,
    relay_domain: str,
    verp_key: VerpKey | None,
    message_ids: Iterable[str | None] = (),
    return_paths: Iterable[str | None] = (),
    extra_basis: tuple[str, ...] = (),
) -> RelayRecord | None:
    """The relayed message that ``message_ids`` / ``return_paths`` name, by the relay's own
    records (module docstring); None when neither names one."""
    basis: dict[str, RelayMessage] = {}
    ids = relay_message_ids(message_ids, relay_domain)
    if ids:
        row = session.scalar(
            select(RelayMessage).where(RelayMessage.message_id.in_(ids)).order_by(RelayMessage.id)
        )
        if row is not None:
            basis["message-id"] = row
    tokens = verp_tokens(return_paths, relay_domain, verp_key) if verp_key else []
    if tokens:
        row = session.scalar(
            select(RelayMessage).where(RelayMessage.token.in_(tokens)).order_by(RelayMessage.id)
        )
        if row is not None:
            basis["verp"] = row
    if not basis:
        return None
    # Two facts naming different messages: the VERP address is the harder one to come by.
    row = basis.get("verp") or basis["message-id"]
    named = tuple(k for k, r in basis.items() if r.token == row.token) + extra_basis
    return _record(session, row, named)


def _record(session: Session, row: RelayMessage, basis: tuple[str, ...]) -> RelayRecord:
    return RelayRecord(
        token=row.token,
        principal_id=row.principal_id,
        customer_id=row.customer_id,
        alias=row.alias,
        direction=row.direction,
        basis=basis,
        stranger_entry=_stranger_entry(session, row.alias, row.token),
    )


def find_by_visible_fields(
    session: Session,
    *,
    relay_domain: str,
    sender: str | None,
    recipients: Iterable[str],
    date: datetime | None,
) -> RelayRecord | None:
    """The relayed message an inline forward shows (module docstring: ``visible-fields``)."""
    suffix = "@" + relay_domain.lower().rstrip(".")
    reverse = (sender or "").strip().strip("<>").lower()
    if not reverse.endswith(suffix):
        return None
    wanted = [r.lower() for r in recipients if r and r.lower().endswith(suffix)][:MAX_CANDIDATES]
    alias = session.scalar(
        select(Alias.address).where(Alias.reverse_address == reverse, Alias.address.in_(wanted))
    )
    if alias is None:
        return None
    stmt = select(RelayMessage).where(
        RelayMessage.alias == alias, RelayMessage.direction == "to_customer"
    )
    when = date if date is None or date.tzinfo else date.replace(tzinfo=UTC)
    rows: list[RelayMessage] = []
    if when is not None:
        rows = list(
            session.scalars(
                stmt.where(
                    RelayMessage.created_at >= when - VISIBLE_DATE_SLACK,
                    RelayMessage.created_at <= when + VISIBLE_DATE_SLACK,
                ).limit(200)
            )
        )
        rows.sort(key=lambda r: abs((r.created_at - when).total_seconds()))
    if not rows:
        # A Date the sender's clock got wrong, or none shown: the pair's latest delivery.
        rows = list(session.scalars(stmt.order_by(RelayMessage.id.desc()).limit(1)))
    if not rows:
        return None
    return _record(session, rows[0], ("visible-fields",))


__all__ = [
    "RelayRecord",
    "find_by_visible_fields",
    "find_relayed",
    "relay_message_ids",
    "verp_tokens",
]
