"""Bounces: a delivery report to a VERP address, mapped to its message, recorded and told.

The relay sends every message with the envelope sender ``bounce+<token><mac>@<relay domain>``
(``relay.messages``). A report that comes back there is taken by ``take_bounce``:

1. the token is verified (HMAC tag) and names one ``relay_messages`` row;
2. the report is read (``relay.dsn.parse_dsn``);
3. for a failure or a delay, a notice to the original sender is built
   (``relay.bounce_notice``): it names the alias the sender wrote to, never the other side;
4. a failure (hard or soft) marks the row ``bounced`` with the report's status; a hard one is
   counted against the recipient (the customer, or the principal for replies) in
   ``relay_bounce_marks``, which marks the address as bouncing at
   ``settings.relay_hard_bounce_limit``; another report for a bounced message counts nothing;
5. every report with a valid token is a ``bounce`` ledger event (ids, kind, status, never
   report text).

One path, ``take_bounce`` (the SMTP handler's): the report is read and its notice built in a
worker thread, the notice is handed to the smarthost through the relay's own connection pool
(``delivery.Smarthost``), and only then is anything written, in one commit. A smarthost that
cannot take the notice makes the reporting MTA retry (4xx) with nothing recorded; one that
refuses it for good (5xx) is recorded (``notified`` false) and not retried. Never lost,
possibly twice: a crash between the notice and the commit sends it again with the retry,
which counts the bounce once.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import (
    case,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailveil.contacts.models import Customer
from mailveil.db.base import utcnow
from mailveil.ledger.events import Event
from mailveil.relay import codes
from mailveil.relay.bounce_notice import Notice, build_notice, describe_status, safe_diagnostic
from mailveil.relay.codes import Reply
from mailveil.relay.dsn import KIND_DELAYED, KIND_HARD, Dsn, RecipientReport, parse_dsn
from mailveil.relay.messages import (
    DIRECTION_TO_CUSTOMER,
    VERP_PREFIX,
    VerpKey,
    VerpKeys,
    get_by_token,
    verify_bounce_local,
)
from mailveil.relay.models import RelayBounceMark, RelayMessage
from mailveil.relay.routes import Route

if TYPE_CHECKING:
    from mailveil.runtime import Runtime

KIND_BOUNCE = "bounce"
# What take_bounce did with a report (BounceOutcome.result and the ledger's detail).
RESULT_RECORDED = "recorded"  # a failure or delay, recorded (and a notice built)
RESULT_DUPLICATE = "duplicate"  # another report for a message already bounced
RESULT_IGNORED = "ignored"  # success report, auto-reply or unreadable: recorded only
RESULT_UNKNOWN_MESSAGE = "unknown-message"  # the token verifies but its row is gone
RESULT_BAD_TOKEN = "bad-token"  # noqa: S105 - not one of ours: refused, nothing written

_T = TypeVar("_T")


@dataclass(frozen=True)
class BounceOutcome:
    result: str
    reply: Reply  # what to answer the reporting MTA
    kind: str | None = None
    status: str | None = None
    token: str | None = None
    direction: str | None = None
    hard_bounces: int = 0
    marked: bool = False  # this report made the recipient's address "bouncing"
    notice: Notice | None = None
    notified: bool = False  # the smarthost took the notice

    @property
    def accepted(self) -> bool:
        return self.result != RESULT_BAD_TOKEN


# ------------------------------------------------------------------------------ bookkeeping


def _count_hard_bounce(
    session: Session,
    *,
    customer_id: int | None,
    principal_id: int | None,
    status: str | None,
    limit: int,
) -> int:
    """Add one hard bounce for the recipient; the new count. Marks the address at ``limit``."""
    column = (
        RelayBounceMark.customer_id if customer_id is not None else RelayBounceMark.principal_id
    )
    key = customer_id if customer_id is not None else principal_id
    now = utcnow()
    bump = (
        update(RelayBounceMark)
        .where(column == key)
        .values(
            hard_bounces=RelayBounceMark.hard_bounces + 1,
            last_status=status,
            last_bounce_at=now,
            marked_at=case(
                (
                    (RelayBounceMark.marked_at.is_(None))
                    & (RelayBounceMark.hard_bounces + 1 >= limit),
                    now,
                ),
                else_=RelayBounceMark.marked_at,
            ),
        )
        .returning(RelayBounceMark.hard_bounces)
    )
    for _attempt in range(3):
        count = session.execute(bump).scalar()
        if count is not None:
            return int(count)
        try:
            with session.begin_nested():
                session.execute(
                    insert(RelayBounceMark).values(
                        customer_id=customer_id,
                        principal_id=principal_id,
                        hard_bounces=1,
                        last_status=status,
                        last_bounce_at=now,
                        marked_at=now if limit <= 1 else None,
                    )
                )
            return 1
        except IntegrityError:
            continue  # another bounce for the same recipient inserted first: count on it
    raise RuntimeError("could not count a hard bounce")


def bounce_mark(
    session: Session, *, customer_id: int | None = None, principal_id: int | None = None
) -> RelayBounceMark | None:
    if (customer_id is None) == (principal_id is None):
        raise ValueError("name exactly one of customer_id and principal_id")
    column = (
        RelayBounceMark.customer_id if customer_id is not None else RelayBounceMark.principal_id
    )
    key = customer_id if customer_id is not None else principal_id
    return session.scalar(select(RelayBounceMark).where(column == key))


def is_bouncing(
    session: Session, *, customer_id: int | None = None, principal_id: int | None = None
) -> bool:
    """True once the recipient's address reached the hard-bounce limit (until cleared)."""
    mark = bounce_mark(session, customer_id=customer_id, principal_id=principal_id)
    return mark is not None and mark.marked_at is not None


def clear_bounces(
    session: Session, *, customer_id: int | None = None, principal_id: int | None = None
) -> bool:
    """Forget a recipient's hard bounces (its address changed or works again). True if any."""
    mark = bounce_mark(session, customer_id=customer_id, principal_id=principal_id)
    if mark is None:
        return False
    session.delete(mark)
    session.flush()
    return True


# ---------------------------------------------------------------------------------- handling


_TOKEN_SHAPE = re.compile(r"[a-z2-7]{16}")


def _verified_token(key: VerpKey, token: str) -> str | None:
    """The message token named by ``token``: a VERP local part or address (its tag is checked
    here), or a bare token the caller's RCPT check already verified (the handler's hook)."""
    value = token.strip().strip("<>")
    local = value.rpartition("@")[0] or value
    if local.lower().startswith(VERP_PREFIX):
        return verify_bounce_local(key, local)
    return local.lower() if _TOKEN_SHAPE.fullmatch(local.lower()) else None


def _route(session: Session, row: RelayMessage) -> Route | None:
    """The message's pair as a ``Route``, for its address choices (``delivery_address``...).

    Not ``routes.lookup_route``: that one detaches everything in the session, the caller's
    objects included, and queries order facts a notice does not need.
    """
    from mailveil.contacts.models import Alias, Principal
    from mailveil.relay.routes import Route

    alias = session.scalar(select(Alias).where(Alias.address == row.alias))
    customer = session.get(Customer, row.customer_id)
    principal = session.get(Principal, row.principal_id)
    if alias is None or customer is None or principal is None:
        return None
    return Route(
        direction=row.direction,
        alias=alias.address,
        reverse_alias=alias.reverse_address,
        revoked=alias.revoked_at is not None,
        customer=customer,
        principal=principal,
        order_status=None,
        order_placed_at=None,
        open_case=False,
    )


def _sender_and_hidden(
    session: Session, runtime: Runtime, row: RelayMessage, route: Route
) -> tuple[str | None, str, dict[str, str]]:
    """(the original sender's address, the alias it wrote to, the other side's addresses)."""
    from mailveil.contacts.customers import customer_address

    if row.direction == DIRECTION_TO_CUSTOMER:
        customer_real = customer_address(session, runtime.vault, route.customer)
        hidden = {customer_real.lower(): route.alias}
        return route.delivery_address(), route.alias, hidden
    hidden = {a: route.reverse_alias for a in route.principal_addresses()}
    sender = None
    if route.customer.deleted_at is None:
        sender = customer_address(session, runtime.vault, route.customer)
    return sender, route.reverse_alias, hidden


@dataclass(frozen=True)
class BounceRead:
    """What a report says, read before anything is written: its message's facts (None:
    the token verifies but its row is gone), what it will be recorded as, the notice."""

    token: str
    dsn: Dsn
    result: str
    row: dict[str, Any] | None = None
    notice: Notice | None = None


def read_bounce(
    session: Session,
    runtime: Runtime,
    token: str,
    message: bytes,
    *,
    verp_key: VerpKey | None = None,
    sign: Callable[[bytes], bytes] | None = None,
) -> BounceRead | BounceOutcome:
    """The report ``message`` that arrived for ``token`` (a VERP local part or address, whose
    tag is verified here, or the bare token the handler verified at RCPT), read and its
    notice built (``sign``: the relay's DKIM signer); a ``BounceOutcome`` for a token that is
    not ours. Writes nothing."""
    settings = runtime.settings
    key = verp_key if verp_key is not None else VerpKeys.load(settings).accepted()
    verified = _verified_token(key, token)
    if verified is None:
        return BounceOutcome(result=RESULT_BAD_TOKEN, reply=codes.BAD_DESTINATION)
    dsn = parse_dsn(message)
    row = get_by_token(session, verified)
    if row is None:
        return BounceRead(verified, dsn, RESULT_UNKNOWN_MESSAGE)
    to_customer = row.direction == DIRECTION_TO_CUSTOMER
    if dsn.failed and row.status == "bounced":
        result = RESULT_DUPLICATE
    elif dsn.failed or dsn.kind == KIND_DELAYED:
        result = RESULT_RECORDED
    else:
        result = RESULT_IGNORED
    # What the notice says about marking is known before counting: the count it would reach.
    marked_next = False
    if result == RESULT_RECORDED and dsn.kind == KIND_HARD:
        mark = bounce_mark(
            session,
            customer_id=row.customer_id if to_customer else None,
            principal_id=None if to_customer else row.principal_id,
        )
        marked_next = (mark.hard_bounces if mark else 0) + 1 == settings.relay_hard_bounce_limit
    notice = None
    if result in (RESULT_RECORDED, RESULT_DUPLICATE):
        route = _route(session, row)
        if route is not None:
            sender, alias, hidden = _sender_and_hidden(session, runtime, row, route)
            if sender:
                data = build_notice(
                    dsn=dsn,
                    alias=alias,
                    to=sender,
                    row=row,
                    hidden=hidden,
                    relay_domain=settings.relay_domain,
                    marked=marked_next,
                )
                notice = Notice(rcpt=sender, data=sign(data) if sign else data)
    facts = {
        "direction": row.direction,
        "customer_id": row.customer_id,
        "principal_id": row.principal_id,
        "alias": row.alias,
        "reason": row.reason,
    }
    return BounceRead(row.token, dsn, result, facts, notice)


def record_bounce(
    session: Session, runtime: Runtime, read: BounceRead, *, notified: bool
) -> BounceOutcome:
    """Write what ``read`` found (row status, hard bounce count, the ``bounce`` entry) in
    the caller's transaction, without committing."""

    settings = runtime.settings
    dsn, result, row = read.dsn, read.result, read.row
    if row is None:
        event = Event(
            kind=KIND_BOUNCE,
            actor="system",
            detail={"relay_message": read.token, "result": result, "kind": dsn.kind},
        )
        runtime.ledger.append(session, [event])
        return BounceOutcome(result=result, reply=codes.REPLY_OK, kind=dsn.kind, token=read.token)
    to_customer = row["direction"] == DIRECTION_TO_CUSTOMER
    customer_id, principal_id = row["customer_id"], row["principal_id"]
    count, marked = 0, False
    if result == RESULT_RECORDED and dsn.failed:
        # Conditional, so two copies of one report racing each other count once.
        changed = session.execute(
            update(RelayMessage)
            .where(RelayMessage.token == read.token, RelayMessage.status != "bounced")
            .values(status="bounced", status_code=dsn.status, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        first = getattr(changed, "rowcount", 1) == 1
        if not first:
            result = RESULT_DUPLICATE
        elif dsn.kind == KIND_HARD:
            count = _count_hard_bounce(
                session,
                customer_id=customer_id if to_customer else None,
                principal_id=None if to_customer else principal_id,
                status=dsn.status,
                limit=settings.relay_hard_bounce_limit,
            )
            marked = count == settings.relay_hard_bounce_limit
    event = Event(
        kind=KIND_BOUNCE,
        actor="system",
        subject=f"customer:{customer_id}",
        alias=row["alias"],
        purpose=row["direction"],
        ref=row["reason"],
        detail={
            "relay_message": read.token,
            "principal": f"principal:{principal_id}",
            "recipient": f"customer:{customer_id}" if to_customer else f"principal:{principal_id}",
            "result": result,
            "kind": dsn.kind,
            "status": dsn.status,
            "format": dsn.format,
            "hard_bounces": count,
            "marked": marked,
            "notice": read.notice is not None,
            "notified": notified,
        },
    )
    runtime.ledger.append(session, [event])
    return BounceOutcome(
        result=result,
        reply=codes.REPLY_OK,
        kind=dsn.kind,
        status=dsn.status,
        token=read.token,
        direction=row["direction"],
        hard_bounces=count,
        marked=marked,
        notice=read.notice,
        notified=notified,
    )


class SessionRunner(Protocol):
    """What the relay's ``journal.Database`` offers: run blocking session work in a thread."""

    def run(self, fn: Callable[[Session], _T], *, commit: bool = False) -> Awaitable[_T]: ...


class NoticeSender(Protocol):
    """What ``delivery.Smarthost`` offers."""

    async def send(self, mail_from: str, rcpt: str, data: bytes) -> None: ...


async def take_bounce(
    db: SessionRunner,
    runtime: Runtime,
    smarthost: NoticeSender,
    token: str,
    message: bytes,
    *,
    verp_key: VerpKey | None = None,
    sign: Callable[[bytes], bytes] | None = None,
) -> BounceOutcome:
    """The one bounce path (module docstring): read, tell the sender, record in one commit.
    ``outcome.reply`` answers the reporting MTA: 250, or the smarthost's 4xx (nothing
    written, so the report comes again and the notice is built again)."""
    from mailveil.relay.delivery import PermanentDeliveryError, TemporaryDeliveryError

    read = await db.run(
        lambda s: read_bounce(s, runtime, token, message, verp_key=verp_key, sign=sign)
    )
    if isinstance(read, BounceOutcome):
        return read
    notified = False
    notice = read.notice
    if notice is not None:
        try:
            await smarthost.send(notice.mail_from, notice.rcpt, notice.data)
            notified = True
        except TemporaryDeliveryError as exc:
            return BounceOutcome(
                result=read.result, reply=exc.reply, kind=read.dsn.kind, token=read.token,
                notice=notice,
            )  # fmt: skip
        except PermanentDeliveryError:
            notified = False  # the sender's own address refuses mail: recorded, not retried
    return await db.run(lambda s: record_bounce(s, runtime, read, notified=notified), commit=True)


__all__ = [
    "KIND_BOUNCE",
    "RESULT_BAD_TOKEN",
    "RESULT_DUPLICATE",
    "RESULT_IGNORED",
    "RESULT_RECORDED",
    "RESULT_UNKNOWN_MESSAGE",
    "BounceOutcome",
    "BounceRead",
    "Dsn",
    "Notice",
    "NoticeSender",
    "RecipientReport",
    "RelayBounceMark",
    "SessionRunner",
    "bounce_mark",
    "build_notice",
    "clear_bounces",
    "describe_status",
    "is_bouncing",
    "parse_dsn",
    "read_bounce",
    "record_bounce",
    "safe_diagnostic",
    "take_bounce",
]
