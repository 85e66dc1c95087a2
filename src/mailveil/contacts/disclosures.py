"""Disclosures: handing a principal the alias of a customer, decided by Cedar, always ledgered.

``disclose`` decides one request; ``disclose_batch`` many at once (one query per fact, one
Cedar call for the inputs not already decided, one insert of new aliases, one ledger
append); ``disclose_bulk`` streams any number of requests through batches, committing each.

Allowed -> the pair's alias and reverse alias, minted on first use and the same afterwards;
ledger kind ``disclosure``. Denied -> ``allowed`` False and the policy's ``reason``; the
denial is itself appended (kind ``disclosure_denied``), so the caller must commit, which is
why denial is a result and not an exception.

A revoked alias is never re-issued: if the pair's alias was revoked, the request is denied
even when policy would allow it (revocation usually follows a leak, and handing the same
principal a fresh alias must be a deliberate act, not a side effect of the next order).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, NamedTuple, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts import validation as v
from mailveil.contacts.aliases import mint_pairs
from mailveil.contacts.models import PRINCIPAL_KINDS, Alias, Customer, Principal
from mailveil.db.base import utcnow
from mailveil.errors import InvalidInput, MailveilError, NotFound, PolicyDenied
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.policy.engine import PolicyEngine
from mailveil.policy.facts import (
    PrincipalEntity,
    chunks,
    customer_attrs,
    disclose_input,
    latest_orders,
    open_case_pairs,
    principal_entity,
)

DEFAULT_BATCH = 5000
REVOKED_REASON = (
    "the alias of this customer for this principal was revoked; it is not re-issued automatically"
)
_aliases = cast(Table, Alias.__table__)


class DisclosureRequest(NamedTuple):
    customer_id: int
    principal_id: int
    purpose: str
    ref: str | None = None


class ExternalDisclosureRequest(NamedTuple):
    """The same, naming the customer and principal by their external ids."""

    customer_external_id: str
    principal_kind: str
    principal_external_id: str
    purpose: str
    ref: str | None = None


AnyRequest = DisclosureRequest | ExternalDisclosureRequest


class DisclosureResult(NamedTuple):
    # A NamedTuple, not a dataclass: bulk disclosure builds millions of these.
    allowed: bool
    customer_id: int | None
    principal_id: int | None
    purpose: str
    ref: str | None
    alias: str | None = None
    reverse_alias: str | None = None
    minted: bool = False
    reason: str = ""
    policy_ids: tuple[str, ...] = ()
    ledger_seq: int | None = None
    error: str | None = None  # problem code when the request could not be decided at all

    @property
    def status(self) -> Literal["allowed", "denied", "error"]:
        if self.error:
            return "error"
        return "allowed" if self.allowed else "denied"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "customer_id": self.customer_id,
            "principal_id": self.principal_id,
            "purpose": self.purpose,
            "ref": self.ref,
        }
        if self.allowed:
            out.update(alias=self.alias, reverse_alias=self.reverse_alias, minted=self.minted)
        else:
            out["reason"] = self.reason
        if self.error:
            out["error"] = self.error
        out["policies"] = list(self.policy_ids)
        out["ledger_seq"] = self.ledger_seq
        return out

    def denial(self) -> PolicyDenied:
        """A refusal as the error every shell answers it with (the API: a 403 problem)."""
        return PolicyDenied(self.reason, policies=self.policy_ids, ledger_seq=self.ledger_seq)


_REF_BAD = re.compile(r"[\x00-\x1f\x7f@]")


def _check_request(purpose: Any, ref: Any, purposes: dict[Any, str]) -> tuple[str, str | None]:
    checked = purposes.get(purpose) if isinstance(purpose, str) else None
    if checked is None:
        checked = purposes[purpose] = v.slug(purpose, "purpose")
    if ref is None:
        return checked, None
    if not isinstance(ref, str):
        raise InvalidInput("ref must be text")
    ref = ref.strip()
    if len(ref) > 255:
        raise InvalidInput("ref must be at most 255 characters")
    if _REF_BAD.search(ref):
        # Refs go to the ledger verbatim: no control characters, nothing address-like.
        raise InvalidInput("ref must not contain control characters or '@'")
    return checked, ref or None


def _shown_purpose(purpose: Any) -> str:
    # An invalid purpose is not echoed back in the result: it is caller text.
    try:
        return v.slug(purpose, "purpose")
    except InvalidInput:
        return ""


def _check_actor(actor: Any) -> str:
    return v.text(actor, "actor", 255, allow_empty=False)


def _resolve(
    session: Session, requests: Sequence[AnyRequest]
) -> list[tuple[int, int] | MailveilError]:
    """Internal ids for every request (batched lookups of external ids)."""
    ext_customers: set[str] = set()
    ext_principals: dict[str, set[str]] = {}
    for r in requests:
        if isinstance(r, ExternalDisclosureRequest):
            ext_customers.add(r.customer_external_id)
            ext_principals.setdefault(r.principal_kind, set()).add(r.principal_external_id)
    cmap: dict[str, int] = {}
    pmap: dict[tuple[str, str], int] = {}
    for part in chunks(sorted(ext_customers)):
        rows = session.execute(
            select(Customer.external_id, Customer.id).where(Customer.external_id.in_(part))
        )
        cmap.update((ext, cid) for ext, cid in rows)
    for kind, exts in ext_principals.items():
        for part in chunks(sorted(exts)):
            for ext, pid in session.execute(
                select(Principal.external_id, Principal.id).where(
                    Principal.kind == kind, Principal.external_id.in_(part)
                )
            ):
                pmap[(kind, ext)] = pid
    out: list[tuple[int, int] | MailveilError] = []
    for r in requests:
        if isinstance(r, DisclosureRequest):
            out.append((r.customer_id, r.principal_id))
            continue
        if r.principal_kind not in PRINCIPAL_KINDS:
            out.append(InvalidInput(f"principal kind must be one of: {', '.join(PRINCIPAL_KINDS)}"))
            continue
        found_c = cmap.get(r.customer_external_id)
        found_p = pmap.get((r.principal_kind, r.principal_external_id))
        if found_c is None:
            out.append(NotFound(f"no customer with external id {v.shown(r.customer_external_id)}"))
        elif found_p is None:
            out.append(
                NotFound(
                    f"no {r.principal_kind} with external id {v.shown(r.principal_external_id)}"
                )
            )
        else:
            out.append((found_c, found_p))
    return out


def disclose_batch(
    session: Session,
    *,
    settings: Settings,
    policy: PolicyEngine,
    ledger: Ledger,
    requests: Sequence[AnyRequest],
    actor: str,
    ledger_denials: bool = True,
) -> list[DisclosureResult]:
    """Decide, mint and ledger a batch; one result per request, in order. Does not commit.

    A request naming an unknown customer or principal, or a bad purpose/ref, gets a result
    with ``error`` set (and no ledger entry); the others are decided normally. With
    ``ledger_denials`` off (an employee's list, where most candidates are expected to be
    denied) denials get no entry each: the caller records one summary instead.
    """
    actor = _check_actor(actor)
    n = len(requests)
    results: list[DisclosureResult | None] = [None] * n
    resolved = _resolve(session, requests)
    purposes: dict[Any, str] = {}
    todo: list[tuple[int, int, int, str, str | None]] = []  # (pos, cid, pid, purpose, ref)
    for pos, (req, ids) in enumerate(zip(requests, resolved, strict=True)):
        try:
            if isinstance(ids, MailveilError):
                raise ids
            purpose, ref = _check_request(req.purpose, req.ref, purposes)
        except MailveilError as exc:
            cid_pid = ids if isinstance(ids, tuple) else (None, None)
            results[pos] = DisclosureResult(
                False,
                cid_pid[0],
                cid_pid[1],
                _shown_purpose(req.purpose),
                None,
                reason=exc.detail,
                error=exc.code,
            )
            continue
        todo.append((pos, ids[0], ids[1], purpose, ref))

    customers: dict[int, tuple[Any, ...]] = {}
    for part in chunks(sorted({t[1] for t in todo})):
        for cid, country, opt, topics, deleted in session.execute(
            select(
                Customer.id,
                Customer.country,
                Customer.opt_outs,
                Customer.sensitive_topics,
                Customer.deleted_at,
            ).where(Customer.id.in_(part))
        ):
            customers[cid] = customer_attrs(country, opt, topics, deleted is not None)
    principals: dict[int, tuple[PrincipalEntity, str]] = {}
    for part in chunks(sorted({t[2] for t in todo})):
        for pid, kind, status, attrs, name in session.execute(
            select(
                Principal.id,
                Principal.kind,
                Principal.status,
                Principal.attributes,
                Principal.display_name,
            ).where(Principal.id.in_(part))
        ):
            principals[pid] = (principal_entity(kind, status, attrs), name)

    live: list[tuple[int, int, int, str, str | None]] = []
    for item in todo:
        pos, cid, pid, purpose, ref = item
        if cid not in customers or pid not in principals:
            missing = f"no customer {cid}" if cid not in customers else f"no principal {pid}"
            results[pos] = DisclosureResult(
                False, cid, pid, purpose, ref, reason=missing, error=NotFound.code
            )
        elif principals[pid][0].kind == "service" and ref is None:
            # A service is given an alias for a template it owns: the template is the ref.
            # (The relay decides a service's mail without one: it is not known at RCPT.)
            results[pos] = DisclosureResult(
                False,
                cid,
                pid,
                purpose,
                ref,
                reason="a service names the template it writes for as ref",
                error=InvalidInput.code,
            )
        else:
            live.append(item)

    pairs = {(cid, pid) for _, cid, pid, _, _ in live}
    existing = existing_aliases(session, pairs)
    window = settings.seller_contact_window_days
    now = utcnow()
    kinds = {pid: entity.kind for pid, (entity, _) in principals.items()}
    orders = latest_orders(session, [p for p in pairs if kinds[p[1]] == "seller"])
    cases = open_case_pairs(session, [p for p in pairs if kinds[p[1]] == "employee"])
    inputs = [
        disclose_input(
            principals[pid][0],
            customers[cid],
            purpose=purpose,
            ref=ref,
            window_days=window,
            order_placed_at=orders.get((cid, pid)),
            open_case=(cid, pid) in cases,
            now=now,
        )
        for _, cid, pid, purpose, ref in live
    ]
    decisions = policy.decide_many(inputs)

    to_mint: dict[tuple[int, int], str] = {}
    for (_, cid, pid, _, _), decision in zip(live, decisions, strict=True):
        if decision.allowed and (cid, pid) not in existing:
            to_mint[(cid, pid)] = principals[pid][1]
    minted = mint_aliases(session, settings, to_mint, existing, now) if to_mint else set()

    teams = {
        pid: str(dict(entity.attrs).get("team") or "")
        for pid, (entity, _) in principals.items()
        if entity.kind == "employee"
    }
    events: list[Event] = []
    # (pos, allowed, cid, pid, purpose, ref, alias, reverse, minted, reason, policy ids)
    done: list[tuple[Any, ...]] = []
    for (pos, cid, pid, purpose, ref), decision in zip(live, decisions, strict=True):
        pair = (cid, pid)
        found = existing.get(pair)
        policies = decision.policy_ids
        subject = f"customer:{cid}"
        if decision.allowed and found is not None and not found[2]:
            fresh = pair in minted
            if fresh:
                minted.discard(pair)  # a pair twice in one batch is minted once
            detail = {"principal": f"principal:{pid}", "policies": list(policies), "minted": fresh}
            team = teams.get(pid)
            if team:
                detail["team"] = team  # who saw it, as of now (the access log shows it)
            events.append(Event("disclosure", actor, subject, found[0], purpose, ref, detail))
            done.append(
                (
                    pos,
                    True,
                    cid,
                    pid,
                    purpose,
                    ref,
                    found[0],
                    found[1],
                    fresh,
                    decision.reason,
                    policies,
                )
            )
            continue
        # Denied by policy, or allowed by policy for a pair whose alias was revoked.
        reason = REVOKED_REASON if decision.allowed else decision.reason
        if not ledger_denials:
            results[pos] = DisclosureResult(
                False, cid, pid, purpose, ref, None, None, False, reason, policies
            )
            continue
        detail = {"principal": f"principal:{pid}", "policies": list(policies), "reason": reason}
        events.append(
            Event(
                "disclosure_denied",
                actor,
                subject,
                found[0] if found else None,
                purpose,
                ref,
                detail,
            )
        )
        done.append((pos, False, cid, pid, purpose, ref, None, None, False, reason, policies))
    if events:
        seq = ledger.append(session, events)[0]  # consecutive from the first
        for pos, ok, cid, pid, purpose, ref, alias, reverse, fresh, reason, policies in done:
            results[pos] = DisclosureResult(
                ok, cid, pid, purpose, ref, alias, reverse, fresh, reason, policies, seq
            )
            seq += 1
    return [r for r in results if r is not None]


def existing_aliases(
    session: Session, pairs: set[tuple[int, int]]
) -> dict[tuple[int, int], tuple[str, str, bool]]:
    """(address, reverse address, revoked) for the pairs that already have an alias."""
    out: dict[tuple[int, int], tuple[str, str, bool]] = {}
    if not pairs:
        return out
    # Customers only in the filter (see latest_orders): a customer's aliases are adjacent
    # in the (customer_id, principal_id) index.
    for cs in chunks(sorted({c for c, _ in pairs})):
        stmt = select(
            Alias.customer_id,
            Alias.principal_id,
            Alias.address,
            Alias.reverse_address,
            Alias.revoked_at,
        ).where(Alias.customer_id.in_(cs))
        for cid, pid, address, reverse, revoked in session.execute(stmt):
            if (cid, pid) in pairs:
                out[(cid, pid)] = (address, reverse, revoked is not None)
    return out


def mint_aliases(
    session: Session,
    settings: Settings,
    wanted: dict[tuple[int, int], str],
    existing: dict[tuple[int, int], tuple[str, str, bool]],
    now: Any,
) -> set[tuple[int, int]]:
    """Insert aliases for ``wanted`` pairs; fills ``existing``; returns the pairs we created.

    ON CONFLICT DO NOTHING: a concurrent disclosure of the same pair wins and its alias is
    used; a random collision with another alias (2^-69 per pair) is retried.
    """
    dialect = session.get_bind().dialect.name
    make = pg_insert if dialect == "postgresql" else sqlite_insert
    created: set[tuple[int, int]] = set()
    pending = dict(wanted)
    for _attempt in range(3):
        addresses = mint_pairs(settings, list(pending.values()))
        rows = [
            {
                "customer_id": cid,
                "principal_id": pid,
                "address": a,
                "reverse_address": r,
                "created_at": now,
            }
            for (cid, pid), (a, r) in zip(pending, addresses, strict=True)
        ]
        result = session.execute(make(_aliases).on_conflict_do_nothing(), rows)
        mine = {
            (row["customer_id"], row["principal_id"]): (row["address"], row["reverse_address"])
            for row in rows
        }
        if getattr(result, "rowcount", -1) == len(rows):
            for pair, (a, r) in mine.items():
                existing[pair] = (a, r, False)
            created.update(mine)
            return created
        found = existing_aliases(session, set(pending))
        for pair, value in found.items():
            existing[pair] = value
            if value[:2] == mine[pair]:
                created.add(pair)
        pending = {p: name for p, name in pending.items() if p not in found}
        if not pending:
            return created
    raise RuntimeError("could not mint unique aliases after 3 attempts")


def disclose(
    session: Session,
    *,
    settings: Settings,
    policy: PolicyEngine,
    ledger: Ledger,
    customer_id: int,
    principal_id: int,
    purpose: str,
    ref: str | None = None,
    actor: str,
) -> DisclosureResult:
    """One disclosure. Raises NotFound / InvalidInput; a denial is a result. Does not commit."""
    return _single(
        session,
        settings,
        policy,
        ledger,
        DisclosureRequest(customer_id, principal_id, purpose, ref),
        actor,
    )


def disclose_external(
    session: Session,
    *,
    settings: Settings,
    policy: PolicyEngine,
    ledger: Ledger,
    customer_external_id: str,
    principal_kind: str,
    principal_external_id: str,
    purpose: str,
    ref: str | None = None,
    actor: str,
) -> DisclosureResult:
    """``disclose`` by external ids (what the API mostly receives)."""
    req = ExternalDisclosureRequest(
        customer_external_id, principal_kind, principal_external_id, purpose, ref
    )
    return _single(session, settings, policy, ledger, req, actor)


_ERRORS: dict[str, type[MailveilError]] = {NotFound.code: NotFound, InvalidInput.code: InvalidInput}


def _single(
    session: Session,
    settings: Settings,
    policy: PolicyEngine,
    ledger: Ledger,
    request: AnyRequest,
    actor: str,
) -> DisclosureResult:
    result = disclose_batch(
        session, settings=settings, policy=policy, ledger=ledger, requests=[request], actor=actor
    )[0]
    if result.error:
        raise _ERRORS.get(result.error, InvalidInput)(result.reason)
    return result


def disclose_bulk(
    session: Session,
    *,
    settings: Settings,
    policy: PolicyEngine,
    ledger: Ledger,
    requests: Iterable[AnyRequest],
    actor: str,
    batch_size: int = DEFAULT_BATCH,
    commit: bool = True,
) -> Iterator[DisclosureResult]:
    """Stream requests through ``disclose_batch`` ``batch_size`` at a time.

    With ``commit`` every batch is committed before its results are yielded, so memory and
    lock time are bounded by the batch, not by the number of requests.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    _check_actor(actor)
    batch: list[AnyRequest] = []
    for request in requests:
        batch.append(request)
        if len(batch) >= batch_size:
            yield from _bulk_step(session, settings, policy, ledger, batch, actor, commit)
            batch = []
    if batch:
        yield from _bulk_step(session, settings, policy, ledger, batch, actor, commit)


def _bulk_step(
    session: Session,
    settings: Settings,
    policy: PolicyEngine,
    ledger: Ledger,
    batch: list[AnyRequest],
    actor: str,
    commit: bool,
) -> list[DisclosureResult]:
    results = disclose_batch(
        session, settings=settings, policy=policy, ledger=ledger, requests=batch, actor=actor
    )
    if commit:
        session.commit()
    return results


__all__ = [
    "REVOKED_REASON",
    "AnyRequest",
    "DisclosureRequest",
    "DisclosureResult",
    "ExternalDisclosureRequest",
    "disclose",
    "disclose_batch",
    "disclose_bulk",
    "disclose_external",
    "existing_aliases",
    "mint_aliases",
]
