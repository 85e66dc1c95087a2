"""The relay's aiosmtpd handler: one SMTP transaction, one recipient, decided as early as it can.

MAIL FROM
    Taken as given (SPF judges it later, for senders that need it).
RCPT TO (one per transaction)
    A second RCPT gets ``452 4.5.3`` and the client sends it in a new transaction, so every
    decision below is about exactly one recipient. Only the relay domain is served (else
    ``550 5.7.1`` relaying denied) and the canary domain (``detection``: a canary's real
    address is taken, anything else there is ``550 5.1.1``). The abuse mailbox
    (``abuse_mailbox_local``) takes anyone's report. Other local parts are looked up with one
    query (``routes.lookup_routes``, batched with other connections' by the journal):

    - a VERP bounce address with a valid tag: its report goes to ``bounces.take_bounce``
      at DATA (the sender told through the smarthost, then recorded);
    - an alias (principal -> customer): a client that authenticated as another principal is a
      stranger (``strangers``: refused here with a ``stranger_at_alias`` entry in refuse
      mode, else taken and decided at DATA); the alias's own principal is checked against
      revocation, suspension and the contact policy (Cedar) right away; an unauthenticated
      client is decided at DATA, where SPF/DKIM can vouch for it (or show a stranger);
    - a reverse alias (customer -> principal): MAIL FROM must be the customer's real address
      (compared by blind index) or ``550 5.7.1``;
    - anything else: ``550 5.1.1``.
DATA
    ``decide.decide`` in a worker thread gives the relay's decision (``decision``: deliver,
    hold or refuse, with its ledger entries; a stranger's message is decided there too,
    ``strangers``); then ``_act`` carries it out: a refusal or a hold is committed to the
    ledger before its reply is sent (when the database cannot take it the client gets a 4xx
    instead, so nothing is refused unrecorded); a delivery goes through ``handoff``
    (committed, handed to the smarthost before-queue, its outcome recorded) and the client
    gets the smarthost's answer in our words. A report to a VERP address is
    ``bounces.take_bounce``'s.
AUTH PLAIN / LOGIN
    The password is a principal's API key (``mvk_...``, role seller or employee); the user
    name is ignored. Offered only over TLS, or on loopback when the operator allows it
    (``server``). Three failures close the connection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session
from sqlalchemy.orm import Session as DbSession

from mailveil.auth.keys import PRINCIPAL_ROLES, Caller, Unauthenticated, authenticate
from mailveil.policy.engine import Decision
from mailveil.relay import codes, prescan
from mailveil.relay.abuse_intake import AbuseIntake
from mailveil.relay.bounces import NoticeSender, take_bounce
from mailveil.relay.codes import Reply
from mailveil.relay.compose import Outgoing
from mailveil.relay.context import RelayContext
from mailveil.relay.decide import customer_gate, decide, is_customers, principal_gate
from mailveil.relay.decision import (
    Deliver,
    Hold,
    Refuse,
    RelayDecision,
    refusal_event,
    stranger_event,
)
from mailveil.relay.delivery import Smarthost
from mailveil.relay.detection import CanaryTarget, canary_hit, find_canary
from mailveil.relay.handoff import GroupCommitBook, hand_over
from mailveil.relay.identity import Sender
from mailveil.relay.journal import Database, GroupCommit, LedgerOnly
from mailveil.relay.lifecycle import seller_gate
from mailveil.relay.messages import (
    DIRECTION_TO_CUSTOMER,
    is_verp_local,
    verify_bounce_local,
)
from mailveil.relay.observe import transaction_done
from mailveil.relay.reconcile import retry_key
from mailveil.relay.routes import Route
from mailveil.relay.smuggling import refusal_for
from mailveil.relay.strangers import refuse_at_rcpt
from mailveil.relay.veto import VetoHook
from mailveil.relay.veto import metadata as veto_metadata

log = logging.getLogger("mailveil.relay")

BounceProcessor = Callable[[str, bytes], Awaitable[Reply]]
MAX_AUTH_FAILURES = 3
PRESCAN_INLINE_BYTES = 1024 * 1024
# Deciding costs CPU in proportion to the message's size: up to this size it runs on the event
# loop, larger ones in a worker thread, so that the loop's pause stays short.
INLINE_DECIDE_BYTES = 64 * 1024


class BounceDesk:
    """Reports to VERP addresses (``bounces.take_bounce``): read and mapped to their message
    in a worker thread, the sender told through the relay's own smarthost pool (the
    handler's, bound when the handler is made), recorded in one commit. Its reply is ours
    (4xx when the notice could not be sent, so the report comes again)."""

    def __init__(
        self, ctx: RelayContext, db: Database, smarthost: NoticeSender | None = None
    ) -> None:
        self.ctx = ctx
        self.db = db
        self.smarthost = smarthost

    async def __call__(self, token: str, raw: bytes) -> Reply:
        if self.smarthost is None:  # not bound to a handler: nowhere to send the notice
            return codes.TEMPORARY_FAILURE
        ctx = self.ctx
        outcome = await take_bounce(
            self.db, ctx.runtime, self.smarthost, token, raw, verp_key=ctx.verp_keys,
            sign=ctx.dkim.sign,
        )  # fmt: skip
        return outcome.reply


def bounce_processor(ctx: RelayContext, db: Database) -> BounceDesk:
    """The relay's bounce handling; ``RelayHandler`` binds it to its smarthost pool."""
    return BounceDesk(ctx, db)


class RelayEnvelope(Envelope):
    """aiosmtpd's envelope plus what RCPT decided for the DATA stage."""

    def __init__(self) -> None:
        super().__init__()
        self.route: Route | None = None
        self.bounce_token: str | None = None
        self.contact: Decision | None = None
        self.stranger = False  # authenticated as another principal than the alias's
        self.canary: CanaryTarget | None = None
        self.abuse = False
        # The message's bytes passed prescan (DATA): parsing need not scan them again.
        self.prescanned = False
        # For the transaction's log line and metrics (relay.observe).
        self.started: float | None = None
        self.decision: str | None = None
        self.token: str | None = None


def _state(envelope: Envelope) -> RelayEnvelope:
    if not isinstance(envelope, RelayEnvelope):  # the server always creates these
        raise TypeError("the relay handler needs RelayEnvelope envelopes")
    return envelope


def sender_of(session: Session, envelope: Envelope) -> Sender:
    peer = session.peer
    ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
    caller = session.auth_data if session.authenticated else None
    return Sender(
        mail_from=envelope.mail_from or "",
        client_ip=ip,
        helo=str(session.host_name or ""),
        principal_id=caller.principal_id if isinstance(caller, Caller) else None,
    )


class RelayHandler:
    def __init__(
        self,
        ctx: RelayContext,
        db: Database,
        journal: GroupCommit,
        smarthost: Smarthost,
        *,
        bounce: BounceProcessor | None = None,
    ) -> None:
        self.ctx = ctx
        self.db = db
        self.journal = journal
        self.smarthost = smarthost
        self.bounce = bounce
        if isinstance(bounce, BounceDesk) and bounce.smarthost is None:
            bounce.smarthost = smarthost  # one pool carries messages and bounce notices
        self.book = GroupCommitBook(journal, 3 * ctx.settings.relay_reconcile_interval_seconds)
        self.relay_domain = ctx.settings.relay_domain.lower()
        self.canary_domain = ctx.settings.canary_domain.lower().rstrip(".")
        self.abuse_local = ctx.settings.abuse_mailbox_local.lower()
        self.intake = AbuseIntake(ctx, db)
        self.veto = VetoHook(ctx.settings)
        # Where messages were decided: "loop" (no I/O needed) or "thread" (for the benchmark
        # and the tests; a counter, not a metric: it says nothing an operator acts on).
        self.decided: Counter[str] = Counter()

    # -- EHLO / MAIL ----------------------------------------------------------------------

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        lines = [line[4:] for line in responses if line[4:] != "HELP"]
        lines.append("ENHANCEDSTATUSCODES")
        return [f"250-{text}" for text in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        _state(envelope).started = time.perf_counter()
        return str(codes.SENDER_OK)

    # -- RCPT -----------------------------------------------------------------------------

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        state = _state(envelope)
        if envelope.rcpt_tos:
            return str(codes.TOO_MANY_RECIPIENTS)
        reply = await self._route_recipient(session, state, address)
        if reply is codes.RECIPIENT_OK:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        else:  # one recipient per transaction: refused here, the transaction is decided
            self._observe(state, reply, "refused_at_rcpt")
        return str(reply)

    def _observe(self, state: RelayEnvelope, reply: Reply | str, decision: str | None) -> None:
        route = state.route
        direction = (
            route.direction if route is not None
            else "bounce" if state.bounce_token is not None
            else "abuse_report" if state.abuse
            else "canary" if state.canary is not None
            else None
        )  # fmt: skip
        transaction_done(
            self.ctx.runtime.metrics, started=state.started, reply=reply, direction=direction,
            decision=decision or state.decision, token=state.token,
        )  # fmt: skip

    async def _route_recipient(self, session: Session, state: RelayEnvelope, address: str) -> Reply:
        local, at, domain = address.rpartition("@")
        if not address.isascii():
            return codes.NON_ASCII_ADDRESS
        domain = domain.lower().rstrip(".")
        if at and local and domain == self.canary_domain and domain != self.relay_domain:
            return await self._rcpt_canary(state, address)
        if not at or not local or domain != self.relay_domain:
            return codes.RELAY_DENIED
        if local.lower() == self.abuse_local:
            state.abuse = True
            return codes.RECIPIENT_OK
        if is_verp_local(local):
            token = verify_bounce_local(self.ctx.verp_keys, local)
            if token is None or self.bounce is None:
                return codes.BAD_DESTINATION
            state.bounce_token = token
            return codes.RECIPIENT_OK
        try:
            route = await self.journal.lookup(address)
        except Exception as exc:
            log.error("relay: recipient lookup failed (%s)", type(exc).__name__)
            return codes.TEMPORARY_FAILURE
        if route is None:
            return codes.BAD_DESTINATION
        sender = sender_of(session, state)
        if route.direction == DIRECTION_TO_CUSTOMER:
            reply = await self._rcpt_to_customer(route, sender, state)
        else:
            reply = await self._rcpt_to_principal(route, sender)
        if reply is codes.RECIPIENT_OK:
            state.route = route
        return reply

    async def _rcpt_to_customer(self, route: Route, sender: Sender, state: RelayEnvelope) -> Reply:
        if sender.principal_id is None:
            return codes.RECIPIENT_OK  # decided at DATA, where SPF/DKIM can vouch
        if sender.principal_id != route.principal_id:
            if not refuse_at_rcpt(self.ctx):
                state.stranger = True  # quarantined or bannered at DATA
                return codes.RECIPIENT_OK
            reply = codes.MAILBOX_DISABLED if route.revoked else codes.NOT_AUTHORIZED
            event = stranger_event(None, self.ctx, route, sender, reply, extra={"action": "refuse"})
            return await self._act(Refuse(reply, event))
        ended = seller_gate(self.ctx.settings, route)  # first: expired aliases look alike
        gate = principal_gate(route) if ended is None else ended[0]
        why = "alias revoked, sender suspended or customer deleted" if ended is None else ended[1]
        if gate is None:
            decision = route.contact_decision(self.ctx.settings, self.ctx.runtime.policy)
            if not decision.allowed:
                gate, why = codes.CONTACT_NOT_ALLOWED, decision.reason
            state.contact = decision
        if gate is None:
            return codes.RECIPIENT_OK
        event = refusal_event(
            route, gate, actor=route.principal_ref, stage="rcpt", why=why,
            relay_domain=self.relay_domain,
        )  # fmt: skip
        return await self._act(Refuse(gate, event))

    async def _rcpt_canary(self, state: RelayEnvelope, address: str) -> Reply:
        ctx = self.ctx
        try:
            target = await self.db.run(lambda s: find_canary(s, ctx, address))
        except Exception as exc:
            log.error("relay: canary lookup failed (%s)", type(exc).__name__)
            return codes.TEMPORARY_FAILURE
        if target is None:
            return codes.BAD_DESTINATION
        state.canary = target
        return codes.RECIPIENT_OK

    async def _rcpt_to_principal(self, route: Route, sender: Sender) -> Reply:
        gate = customer_gate(route)
        why = "alias revoked, recipient unavailable or customer deleted"
        if gate is None:
            if is_customers(self.ctx, route, sender.mail_from):
                return codes.RECIPIENT_OK
            gate, why = codes.NOT_AUTHORIZED, "envelope sender is not the customer's address"
        event = refusal_event(
            route, gate, actor=None, stage="rcpt", why=why, relay_domain=self.relay_domain
        )
        return await self._act(Refuse(gate, event))

    # -- DATA -----------------------------------------------------------------------------

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await self._data(server, session, envelope)
        self._observe(_state(envelope), reply, None)
        return reply

    async def _data(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        why = "smuggling-shaped line ending"
        refusal = refusal_for(raw)
        if refusal is None:  # every recipient, the abuse mailbox too: before any parser runs
            why = "over a parsing limit"
            if len(raw) < PRESCAN_INLINE_BYTES:
                refusal = prescan.refusal_for(raw, self.ctx.limits)
            else:  # ~10 ns a byte: a large message is scanned off the event loop
                refusal = await self.db.in_thread(prescan.refusal_for, raw, self.ctx.limits)
        if refusal is None:
            _state(envelope).prescanned = True
            return await self.handle_message(server, session, envelope)
        route = _state(envelope).route
        if route is not None:
            sender = sender_of(session, envelope)
            actor = sender.actor if sender.principal_id == route.principal_id else None
            event = refusal_event(
                route, refusal, actor=actor, stage="data", why=why,
                relay_domain=self.relay_domain,
            )  # fmt: skip
            return str(await self._act(Refuse(refusal, event)))
        return str(refusal)

    async def handle_message(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        state = _state(envelope)
        raw = envelope.original_content or b""
        restart = getattr(server, "restart_timer", None)
        if callable(restart):
            restart()  # the time we take is not the client's to account for
        if state.bounce_token is not None:
            return str(await self._bounce(state.bounce_token, raw))
        sender = sender_of(session, envelope)
        if state.abuse:
            return str(await self._abuse(sender, raw))
        if state.canary is not None:
            return str(await self._canary(state.canary, sender, raw))
        route = state.route
        if route is None:
            return str(codes.BAD_SEQUENCE)
        contact = state.contact
        ctx = self.ctx
        stranger = state.stranger
        scanned = state.prescanned

        veto: dict[str, Any] = {}  # what the veto hook is shown, built in the same thread

        def work(s: DbSession) -> RelayDecision:
            decision = decide(
                s, ctx, route, sender, raw, contact=contact, stranger=stranger, scanned=scanned
            )
            # The hook is shown a principal's own message to a customer (a stranger's
            # bannered one carries its stranger entry and is not the principal's to vouch for).
            if (
                isinstance(decision, Deliver)
                and self.veto.enabled
                and route.direction == DIRECTION_TO_CUSTOMER
                and not decision.before
            ):
                veto.update(veto_metadata(s, route, decision.outgoing, self.relay_domain))
            return decision

        try:
            inline = self._inline(route, sender, raw, stranger)
            decision = self.db.run_inline(work) if inline else None
            if decision is None:
                decision = await self.db.run(work)
                self.decided["thread"] += 1
            else:
                self.decided["loop"] += 1
            if isinstance(decision, Deliver) and veto:
                decision = await self._veto(route, decision.outgoing, raw, veto)
        except Exception as exc:
            log.error("relay: message processing failed (%s)", type(exc).__name__)
            return str(codes.TEMPORARY_FAILURE)
        state.decision = _label(decision)
        if isinstance(decision, Deliver):
            state.token = decision.outgoing.token
            # A sender's retry of a deferred message is that message (relay.reconcile).
            key = retry_key(route.direction, route.alias, sender.mail_from, raw)
            # Once the ledger has the message, see it through even if the client hangs up.
            handed = asyncio.shield(
                hand_over(ctx, self.smarthost, self.book, route, decision, retry_key=key)
            )
            return str((await handed).reply)
        return str(await self._act(decision))

    def _inline(self, route: Route, sender: Sender, raw: bytes, stranger: bool) -> bool:
        """Whether to decide on the event loop (``Database.run_inline``): only a principal's
        own message to a customer, authenticated by SMTP AUTH (no SPF/DKIM/DMARC lookups),
        small enough to keep the loop's pause short, and no veto hook to ask."""
        return (
            route.direction == DIRECTION_TO_CUSTOMER
            and sender.principal_id == route.principal_id
            and not stranger
            and len(raw) <= INLINE_DECIDE_BYTES
            and not self.veto.enabled
        )

    async def _act(self, decision: Refuse | Hold) -> Reply:
        """A refusal or a hold, at RCPT or DATA: its entry committed, then its reply; if the
        entry cannot be committed, a 4xx instead, so nothing is refused unrecorded."""
        if decision.event is None:
            return decision.reply
        try:
            await self.journal.write(LedgerOnly(decision.event))
        except Exception as exc:
            log.error("relay: ledger write failed (%s)", type(exc).__name__)
            return codes.TEMPORARY_FAILURE
        return decision.reply

    async def _veto(
        self, route: Route, out: Outgoing, raw: bytes, meta: dict[str, Any]
    ) -> RelayDecision:
        """The marketplace's veto hook (``veto``): allow, refuse, or hold (also on no answer)."""
        verdict = await self.veto.ask(meta)
        if verdict.decision == "allow":
            return self.veto.verdict_outcome(verdict, route, out, raw)  # nothing blocking
        return await self.db.in_thread(self.veto.verdict_outcome, verdict, route, out, raw)

    async def _abuse(self, sender: Sender, raw: bytes) -> Reply:
        """A report to the abuse mailbox: taken whatever the database or DNS is doing
        (``abuse_intake``: waited for, kept pending or queued, never bounced)."""
        return await self.intake.take(sender, raw)

    async def _canary(self, target: CanaryTarget, sender: Sender, raw: bytes) -> Reply:
        ctx = self.ctx
        try:
            held = await self.db.run(lambda s: canary_hit(s, ctx, target, sender, raw))
        except Exception as exc:
            log.error("relay: canary message failed (%s)", type(exc).__name__)
            return codes.TEMPORARY_FAILURE
        return await self._act(held)

    async def _bounce(self, token: str, raw: bytes) -> Reply:
        if self.bounce is None:
            return codes.BAD_DESTINATION
        try:
            return await self.bounce(token, raw)
        except Exception as exc:
            log.error("relay: bounce handling failed (%s)", type(exc).__name__)
            return codes.TEMPORARY_FAILURE

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would send the exception's text to the client (and log it); the text of an
        # exception is not ours to vouch for, so only its type is logged and a 4xx is sent.
        log.error("relay: unexpected %s in an SMTP session", type(error).__name__)
        return str(codes.TEMPORARY_FAILURE)

    # -- AUTH (PLAIN, LOGIN): the password is the principal's API key ---------------------

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        blob: Any
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            blob = _b64(args[1])
            if blob is None:
                await server.push(str(codes.SYNTAX_ERROR))
                return AuthResult(success=False, handled=True)
        assert isinstance(blob, bytes)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await server.push(str(codes.SYNTAX_ERROR))
            return AuthResult(success=False, handled=True)
        return await self._check_key(server, parts[2])

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            user = await server.challenge_auth(SMTP.AuthLoginUsernameChallenge)
            if user is MISSING:
                return AuthResult(success=False, handled=True)
        elif _b64(args[1]) is None:
            await server.push(str(codes.SYNTAX_ERROR))
            return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(SMTP.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(password, bytes)
        return await self._check_key(server, password)

    async def _check_key(self, server: SMTP, password: bytes) -> AuthResult:
        session = server.session
        assert session is not None
        failures: int = getattr(session, "mailveil_auth_failures", 0)
        caller: Caller | None = None
        try:
            token = password.decode("ascii")
            caller = await self.db.run(lambda s: authenticate(s, token))
        except (UnicodeDecodeError, Unauthenticated):
            caller = None
        except Exception as exc:
            log.error("relay: API key check failed (%s)", type(exc).__name__)
            return AuthResult(success=False, handled=False, message=str(codes.TEMPORARY_FAILURE))
        if caller is None or caller.role not in PRINCIPAL_ROLES or caller.principal_id is None:
            failures += 1
            session.mailveil_auth_failures = failures  # type: ignore[attr-defined]
            if failures >= MAX_AUTH_FAILURES:
                await server.push(str(codes.TOO_MANY_AUTH_FAILURES))
                if server.transport is not None:
                    server.transport.close()
                return AuthResult(success=False, handled=True)
            return AuthResult(success=False, handled=False, message=str(codes.AUTH_INVALID))
        return AuthResult(success=True, auth_data=caller, message=str(codes.AUTH_SUCCEEDED))


def _label(decision: RelayDecision) -> str:
    """The decision as the transaction's log line and metrics name it (``observe``)."""
    if isinstance(decision, Refuse):
        return "refused"
    if isinstance(decision, Hold):
        return "held"
    return "bannered" if decision.before else "outgoing"


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


__all__ = [
    "BounceDesk",
    "BounceProcessor",
    "RelayEnvelope",
    "RelayHandler",
    "bounce_processor",
    "sender_of",
]
