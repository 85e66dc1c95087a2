"""The operator's side of the quarantine: what is held, and releasing or deleting it.

What a held file is comes from the ledger entry that holds it (the ``stranger_at_alias`` or
``canary_hit`` entry whose detail names its sha256). A release delivers the message as
``relay_stranger_action = "banner"`` would (rewritten as the alias's principal's messages
are, with the warning, DKIM-signed, VERP), ledgers it before delivery like every message
(``quarantine_released`` beside its ``message`` entry), and removes the file once the
smarthost took it. A deletion is ledgered too. A canary's message has nobody to go to: it
is evidence, and can only be deleted.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.errors import Conflict, NotFound
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.models import LedgerEntry
from mailveil.relay import quarantine
from mailveil.relay.context import RelayContext
from mailveil.relay.decide import header_from_address
from mailveil.relay.decision import KIND_STRANGER, Deliver
from mailveil.relay.delivery import Smarthost
from mailveil.relay.handoff import SessionBook, hand_over
from mailveil.relay.identity import Sender
from mailveil.relay.parse import parse_message
from mailveil.relay.routes import Route, lookup_route
from mailveil.relay.strangers import banner_outgoing, undeliverable

HOLDING_KINDS = (KIND_STRANGER, "canary_hit", "message_held")  # the last: the veto hook


@dataclass(frozen=True)
class HeldEntry:
    """A held file with the newest ledger entry that holds it (None: no entry names it)."""

    held: quarantine.Held
    seq: int | None = None
    kind: str | None = None
    subject: str | None = None
    alias: str | None = None
    detail: dict[str, Any] | None = None

    def view(self) -> dict[str, Any]:
        detail = self.detail or {}
        return {
            "sha256": self.held.sha256,
            "size": self.held.size,
            "held_at": self.held.held_at.isoformat(timespec="seconds"),
            "kind": self.kind,
            "entry": self.seq,
            "subject": self.subject,
            "alias": self.alias,
            "principal": detail.get("principal"),
            "envelope_from": detail.get("envelope_from"),
            "header_from": detail.get("header_from"),
            "from_domain": detail.get("from_domain"),
            "spf": detail.get("spf"),
            "dmarc": detail.get("dmarc"),
            "dkim": detail.get("dkim"),
            "client_ip": detail.get("client_ip"),
            "fallback": detail.get("fallback"),
        }


def _entries(session: Session, wanted: set[str]) -> dict[str, tuple[Any, ...]]:
    """The newest holding entry per sha256 in ``wanted``. Operator commands are rare and the
    ledger has no index on detail, so the holding kinds are read and matched here."""
    found: dict[str, tuple[Any, ...]] = {}
    rows = session.execute(
        select(
            LedgerEntry.seq,
            LedgerEntry.kind,
            LedgerEntry.subject,
            LedgerEntry.alias,
            LedgerEntry.detail,
        )
        .where(LedgerEntry.kind.in_(HOLDING_KINDS))
        .order_by(LedgerEntry.seq)
    )
    for seq, kind, subject, alias, text in rows:
        if not any(sha in text for sha in wanted):
            continue
        detail = json.loads(text)
        sha = detail.get("sha256")
        if detail.get("action") == "quarantine" and sha in wanted:
            found[sha] = (seq, kind, subject, alias, detail)
    return found


def list_held(session: Session, settings: Settings) -> list[HeldEntry]:
    held = quarantine.held(settings.data_dir)
    entries = _entries(session, {h.sha256 for h in held})
    return [HeldEntry(h, *entries.get(h.sha256, ())) for h in held]


def held_entry(session: Session, settings: Settings, sha256: str) -> HeldEntry:
    sha = quarantine.check_sha(sha256)
    matches = [h for h in quarantine.held(settings.data_dir) if h.sha256 == sha]
    if not matches:
        raise NotFound("no quarantined message with that SHA-256")
    entry = _entries(session, {sha}).get(sha, ())
    return HeldEntry(matches[0], *entry)


def prepare_release(
    session: Session, ctx: RelayContext, sha256: str, *, actor: str
) -> tuple[HeldEntry, Route, Deliver]:
    """The message rewritten with its warning, and the ``quarantine_released`` entry that goes
    before its own: the decision to deliver it. Raises NotFound / Conflict / RelayRefusal."""
    entry = held_entry(session, ctx.settings, sha256)
    raw = quarantine.read(ctx.settings.data_dir, entry.held.sha256)
    if entry.kind is None or entry.detail is None:
        raise NotFound("no ledger entry holds this message; it can only be deleted")
    if entry.kind == "message_held":
        raise Conflict(
            "the marketplace's veto hook held this message: releasing it is not supported "
            "yet; delete it, and the seller sends it again once the marketplace allows it"
        )
    if entry.kind != KIND_STRANGER or not entry.alias:
        raise Conflict("a canary's message is evidence with nobody to deliver it to")
    route = lookup_route(session, entry.alias)
    if route is None:
        raise NotFound("the alias this message was sent to no longer exists")
    why = undeliverable(route)
    if why is not None:
        raise Conflict(f"the message cannot be delivered: {why}")
    detail = entry.detail
    envelope = str(detail.get("envelope_from") or "")
    sender = Sender(
        mail_from=envelope if "@" in envelope else "",
        client_ip=str(detail.get("client_ip") or ""),
        helo=str(detail.get("helo") or ""),
    )
    message = parse_message(raw, ctx.limits)
    out = banner_outgoing(session, ctx, route, sender, message, header_from_address(message))
    out.event.detail["released"] = entry.held.sha256
    released = Event(
        kind="quarantine_released",
        actor=actor,
        subject=route.customer_ref,
        alias=route.alias,
        detail={
            "sha256": entry.held.sha256,
            "from_entry": entry.seq,
            "principal": route.principal_ref,
            "relay_message": out.token,
        },
    )
    return entry, route, Deliver(out, (released,))


def release(session: Session, ctx: RelayContext, sha256: str, *, actor: str) -> str:
    """Release one held message (module docstring); its relay message token. Delivered and
    recorded as the relay does every message (``relay.handoff``). On a smarthost failure the
    outcome is recorded, the file stays and ``DeliveryError`` is raised (its ``reply`` says
    what the smarthost's answer means)."""
    entry, route, decision = prepare_release(session, ctx, sha256, actor=actor)
    handed = asyncio.run(_hand_over(session, ctx, route, decision))
    if handed.error is not None:
        raise handed.error
    quarantine.remove(ctx.settings.data_dir, entry.held.sha256)
    return decision.outgoing.token


async def _hand_over(session: Session, ctx: RelayContext, route: Route, decision: Deliver) -> Any:
    smarthost = Smarthost.from_settings(ctx.settings)
    try:
        return await hand_over(ctx, smarthost, SessionBook(session, ctx), route, decision)
    finally:
        await smarthost.close()


def delete(
    session: Session, settings: Settings, ledger: Ledger, sha256: str, *, actor: str
) -> HeldEntry:
    """Delete one held message: the ledger entry committed first, then the file goes."""
    entry = held_entry(session, settings, sha256)
    detail: dict[str, Any] = {"sha256": entry.held.sha256, "from_entry": entry.seq}
    if entry.detail is not None and entry.detail.get("principal"):
        detail["principal"] = entry.detail["principal"]
    ledger.append(
        session,
        [Event("quarantine_deleted", actor, entry.subject, entry.alias, detail=detail)],
    )
    session.commit()
    quarantine.remove(settings.data_dir, entry.held.sha256)
    return entry


__all__ = [
    "HOLDING_KINDS",
    "HeldEntry",
    "delete",
    "held_entry",
    "list_held",
    "prepare_release",
    "release",
]
