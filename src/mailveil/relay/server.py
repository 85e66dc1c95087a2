"""The relay's SMTP server: aiosmtpd on ``relay_host:relay_port``, beside the API or alone.

Protocol choices (each a setting, see ``config.Settings``):

- STARTTLS when ``relay_tls_cert`` and ``relay_tls_key`` are set. SMTP AUTH is offered only
  after STARTTLS, except to a loopback client when ``relay_allow_plain_auth_on_loopback`` is
  on (a seller's local submission agent on the same machine, tests).
- ``SIZE relay_max_message_bytes`` is advertised and enforced while DATA is read: a bigger
  message is discarded as it arrives (memory stays bounded) and refused with ``552 5.3.4``.
  Lines over 1000 octets are refused the same way (``500 5.5.2``).
- ``ENHANCEDSTATUSCODES`` (RFC 2034): every reply carries an enhanced code. The relay's own
  replies come from ``codes``; aiosmtpd's fixed replies are mapped here (``enhance``).
- Slow clients: each command, and a whole DATA transfer, must arrive within
  ``relay_timeout_seconds`` or the client gets ``421 4.4.2`` and the connection is closed
  (aiosmtpd's timer); at most
  ``relay_max_connections`` connections at once, others get ``421 4.7.0``.
- One recipient per transaction, decisions at RCPT, before-queue delivery: see ``handler``.
- aiosmtpd's own logger (``mail.log``) logs envelope addresses at INFO; the server raises its
  level to ERROR when it starts so no real address reaches a log.

``RelayServer`` runs on the caller's event loop (``mailveil serve`` shares the loop with
uvicorn); ``RelayThread`` runs one in a thread of its own (tests, benchmarks), as aiosmtpd's
``Controller`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import ipaddress
import logging
import os
import re
import signal
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP

from mailveil.config import SettingsError
from mailveil.errors import MailveilError
from mailveil.relay import codes
from mailveil.relay.arenas import cap_malloc_arenas
from mailveil.relay.balance import BalancedListener, Seat
from mailveil.relay.codes import Reply
from mailveil.relay.context import RelayContext
from mailveil.relay.delivery import Smarthost
from mailveil.relay.handler import RelayEnvelope, RelayHandler, bounce_processor
from mailveil.relay.journal import Database, Journal
from mailveil.relay.reconcile import Reconciled, reconcile
from mailveil.relay.sender_auth import Resolver
from mailveil.runtime import Runtime

log = logging.getLogger("mailveil.relay")

_FINAL_LINE = re.compile(r"^(\d{3}) (.*)$", re.DOTALL)
_HAS_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?: |$)")
# aiosmtpd's fixed replies that have a specific one of ours.
_MAPPED: dict[str, Reply] = {
    "552 Error: Too much mail data": codes.MESSAGE_TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": codes.MESSAGE_TOO_BIG,
    "500 Line too long (see RFC5321 4.5.3.1.6)": codes.LINE_TOO_LONG,
    "500 Command line too long": codes.COMMAND_TOO_LONG,
    "503 Error: need MAIL command": codes.BAD_SEQUENCE,
    "503 Error: need RCPT command": codes.BAD_SEQUENCE,
    "503 Error: nested MAIL command": codes.BAD_SEQUENCE,
    "503 Already authenticated": codes.ALREADY_AUTHENTICATED,
    "555 MAIL FROM parameters not recognized or not implemented": codes.PARAMETER_UNRECOGNIZED,
    "555 RCPT TO parameters not recognized or not implemented": codes.PARAMETER_UNRECOGNIZED,
    "530 Must issue a STARTTLS command first": codes.STARTTLS_REQUIRED,
    # A command argument with 8-bit bytes: the relay does not offer SMTPUTF8.
    "500 Error: strict ASCII mode": codes.NON_ASCII_ADDRESS,
}
# Enhanced code for the other fixed replies, by basic code (RFC 3463 subjects).
_BY_CODE = {
    221: "2.0.0",
    250: "2.0.0",
    252: "2.0.0",
    421: "4.3.0",
    454: "4.7.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    535: "5.7.8",
    538: "5.7.11",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.7.0",
    555: "5.5.4",
}
_NO_ENHANCED = {220, 334, 354}
# A plain ``<local@domain>`` command argument (dot-atoms, RFC 5322 atext), with any parameters
# after one or more spaces: what aiosmtpd's header parser would give back unchanged.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_PLAIN_PATH = re.compile(rf"<({_DOT_ATOM}@{_DOT_ATOM})>(?: +([^ \t(].*))?", re.DOTALL)


class RelayStartError(MailveilError):
    code = "relay-start"
    status = 500
    title = "The relay cannot start"


def enhance(line: str) -> str:
    """A reply line with an RFC 2034 enhanced status code (continuation lines unchanged)."""
    match = _FINAL_LINE.match(line)
    if match is None:
        return line
    code, text = int(match.group(1)), match.group(2)
    if code in _NO_ENHANCED or _HAS_ENHANCED.match(text):
        return line
    mapped = _MAPPED.get(line)
    if mapped is not None:
        return str(mapped)
    if line.startswith("500 Error: command "):
        return str(codes.COMMAND_UNRECOGNIZED)
    enhanced = _BY_CODE.get(code, f"{code // 100}.0.0")
    return f"{code} {enhanced} {text}"


def listen_problem(host: str, port: int, exc: OSError) -> str:
    """Why the relay cannot listen, naming the port and what to change."""
    why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    text = f"the relay cannot listen on {host}:{port}: {why}"
    if exc.errno == errno.EADDRINUSE:
        text += f" (port {port} is taken: stop the other relay or MTA, or set relay_port)"
    elif exc.errno == errno.EACCES:
        text += f" (port {port} needs privileges: use a port above 1023 behind Postfix)"
    return text


def _is_loopback(peer: Any) -> bool:
    try:
        return bool(peer) and ipaddress.ip_address(str(peer[0])).is_loopback
    except ValueError:
        return False


class _Connections:
    def __init__(self, limit: int, gauge: Any = None, seat: Seat | None = None) -> None:
        self.limit = limit
        self.open = 0
        self.live: set[RelaySMTP] = set()
        self.gauge = gauge  # mailveil_relay_connections
        self.seat = seat  # this worker's share of a shared socket's connections

    def changed(self, delta: int) -> None:
        self.open += delta
        if self.gauge is not None:
            self.gauge.inc(delta)
        if self.seat is not None:
            self.seat.set_open(self.open)

    def close_all(self) -> None:
        for protocol in list(self.live):
            if protocol.transport is not None:
                protocol.transport.close()


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with the relay's envelope, enhanced codes and connection rules."""

    def __init__(
        self,
        handler: RelayHandler,
        *,
        connections: _Connections,
        loopback_plain_auth: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._connections = connections
        self._loopback_plain_auth = loopback_plain_auth
        self._counted = False
        self._over_limit = False
        self._raw_replies = False

    def _create_envelope(self) -> RelayEnvelope:
        return RelayEnvelope()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        assert self.session is not None
        # Per connection: plain AUTH only for a loopback peer, and only if allowed.
        self._auth_require_tls = not (self._loopback_plain_auth and _is_loopback(self.session.peer))
        if first and not self._counted:
            self._counted = True
            self._connections.changed(1)
            self._connections.live.add(self)
            self._over_limit = self._connections.open > self._connections.limit

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self._connections.changed(-1)
            self._connections.live.discard(self)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self._over_limit:
            await super().push(str(codes.TOO_MANY_CONNECTIONS))
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    async def push(self, status: Any) -> None:
        if isinstance(status, str) and not self._raw_replies:
            status = enhance(status)
        await super().push(status)

    async def smtp_EHLO(self, hostname: str) -> None:
        # EHLO/HELO replies carry extension keywords, not status text (RFC 2034 section 3).
        self._raw_replies = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._raw_replies = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._raw_replies = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._raw_replies = False

    async def smtp_VRFY(self, arg: str) -> None:
        # aiosmtpd echoes the argument; the relay confirms nothing about any address.
        await self.push(str(codes.CANNOT_VRFY))

    def _timeout_cb(self) -> None:
        # aiosmtpd only closes the connection; an idle or trickling client is told why first
        # (RFC 5321 4.5.3.2: the server should say 421 before it closes on a timeout).
        transport = self.transport
        if transport is not None and not transport.is_closing():
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(f"{codes.CONNECTION_TIMEOUT}\r\n".encode("ascii"))
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parsing for MAIL and RCPT, without its cost for a plain
        ``<local@domain>``: aiosmtpd defines a typing Protocol class on every call (an ABC
        built per command) and runs the RFC 5322 header parser. A plain path is exactly what
        that parser gives back, so it is taken as is (with aiosmtpd's local-part limit);
        anything else (comments, quoted or obsolete forms, encoded words, no angle brackets)
        goes to aiosmtpd's own."""
        match = _PLAIN_PATH.fullmatch(arg) if "=?" not in arg else None
        if match is None:
            address: tuple[str | None, str | None] = super()._getaddr(arg)
            return address
        addr = match.group(1)
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, match.group(2) or ""

    def restart_timer(self) -> None:
        """Give the relay's own work (delivery) a fresh timeout, not the client's leftover."""
        self._reset_timeout()


def tls_context(settings_cert: str, settings_key: str) -> ssl.SSLContext | None:
    if not settings_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings_cert, settings_key)
    return context


class RelayServer:
    """The SMTP relay on the running event loop: ``await start()``, ``await stop()``."""

    def __init__(
        self,
        ctx: RelayContext,
        *,
        host: str | None = None,
        port: int | None = None,
        smarthost: Smarthost | None = None,
        sock: socket.socket | None = None,
        seat: Seat | None = None,
    ) -> None:
        """``sock``: an already listening socket (worker processes share their parent's);
        ``seat``: this worker's place among the processes sharing it (``relay.balance``)."""
        settings = ctx.settings
        self.ctx = ctx
        self.sock = sock
        self.seat = seat
        self.host = host if host is not None else settings.relay_host
        self.port = port if port is not None else settings.relay_port
        self.db = Database(ctx.runtime.session_factory)
        self._connections = _Connections(
            settings.relay_max_connections, ctx.runtime.metrics.relay_connections, seat
        )
        # Group commit waits for other connections' items only when there are others.
        self.journal = Journal(self.db, ctx.runtime.ledger, senders=lambda: self._connections.open)
        self.smarthost = smarthost or Smarthost.from_settings(settings)
        self.handler = RelayHandler(
            ctx,
            self.db,
            self.journal,
            self.smarthost,
            bounce=bounce_processor(ctx, self.db),
        )
        self.tls = tls_context(settings.relay_tls_cert, settings.relay_tls_key)
        self._server: asyncio.Server | None = None
        self._listener: BalancedListener | None = None
        self._reconciler: asyncio.Task[None] | None = None

    @classmethod
    def from_runtime(
        cls, runtime: Runtime, *, resolver: Resolver | None = None, **kwargs: Any
    ) -> RelayServer:
        """Keys and policy settings are read here: a bad one is a ``RelayStartError``."""
        try:
            return cls(RelayContext.load(runtime, resolver=resolver), **kwargs)
        except (SettingsError, ssl.SSLError) as exc:
            raise RelayStartError(str(exc)) from exc

    def _protocol(self) -> RelaySMTP:
        settings = self.ctx.settings
        return RelaySMTP(
            self.handler,
            connections=self._connections,
            loopback_plain_auth=settings.relay_allow_plain_auth_on_loopback,
            data_size_limit=settings.relay_max_message_bytes,
            enable_SMTPUTF8=False,
            decode_data=False,
            hostname=settings.relay_hostname or settings.relay_domain,
            ident="mailveil relay",
            tls_context=self.tls,
            timeout=settings.relay_timeout_seconds,
            auth_require_tls=True,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> None:
        # aiosmtpd logs envelope addresses at INFO and a deprecation on every AUTH at WARNING.
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        cap_malloc_arenas(self.ctx.settings.relay_malloc_arenas)  # before its threads start
        loop = asyncio.get_running_loop()
        # Before the first client: its retry of a message a killed relay left "sending" must
        # find that row already "unknown" (and retries looked for).
        await self.reconcile()
        try:
            if self.sock is not None and self.seat is not None:
                self._listener = BalancedListener(self.sock, self._protocol, self.seat, loop)
                self._listener.start()
            elif self.sock is not None:
                self._server = await loop.create_server(self._protocol, sock=self.sock)
            else:
                self._server = await loop.create_server(
                    self._protocol, host=self.host, port=self.port
                )
        except OSError as exc:
            raise RelayStartError(listen_problem(self.host, self.port, exc)) from exc
        self.journal.start()
        self._reconciler = loop.create_task(self._reconcile_every(), name="relay-reconcile")
        listening = self.sock if self._server is None else (self._server.sockets or [None])[0]
        if listening is not None:
            self.port = int(listening.getsockname()[1])
        log.info("relay listening on %s:%s", self.host, self.port)

    async def reconcile(self) -> Reconciled | None:
        """One ``relay.reconcile`` pass: rows a stopped relay left ``sending`` become
        ``unknown``; while retryable rows exist, new messages are checked for retries. A
        failure is logged (the next pass tries again), never fatal to the relay."""
        ctx = self.ctx
        try:
            done = await self.db.run(
                lambda s: reconcile(s, ctx.settings, ctx.runtime.ledger), commit=True
            )
        except Exception as exc:
            log.error("relay: reconcile failed (%s)", type(exc).__name__)
            return None
        if done.unknown:
            log.warning(
                "relay: %d message(s) left sending by a stopped relay: unknown", done.unknown
            )
        if done.retryable:
            self.journal.expect_retries(3 * ctx.settings.relay_reconcile_interval_seconds)
        return done

    async def _reconcile_every(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.settings.relay_reconcile_interval_seconds)
            await self.reconcile()

    async def stop(self) -> None:
        """Stop listening, hang up on clients (a transaction without its 250 is the client's
        to retry), finish the ledger writes under way, close the smarthost connections."""
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
            self._reconciler = None
        if self._listener is not None:
            self._listener.close()
            self._connections.close_all()
            self._listener = None
        if self._server is not None:
            self._server.close()
            self._connections.close_all()
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)  # let the closed connections' tasks see it
        await self.journal.close()
        self.db.close()
        await self.smarthost.close()
        await self.handler.veto.close()

    async def serve_forever(
        self, stop: asyncio.Event | None = None, ready: Callable[[], None] | None = None
    ) -> None:
        """Serve until ``stop`` is set; ``ready`` is called once the relay listens."""
        await self.start()
        try:
            if ready is not None:
                ready()
            await (stop or asyncio.Event()).wait()
        finally:
            await self.stop()


async def serve_beside(relay: RelayServer, main: Awaitable[Any]) -> None:
    """Run ``main`` (uvicorn's ``Server.serve()`` in ``mailveil serve``) with the relay
    started before it and stopped after it, on one event loop.

    uvicorn handles SIGINT/SIGTERM itself, then restores the previous handlers and raises the
    signal again once it has shut down. The handlers in place meanwhile only note it, so the
    relay stops cleanly after the API and the process exits normally.
    """
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda _sig, _frame: None)
    try:
        try:
            await relay.start()
        except BaseException:
            if inspect.iscoroutine(main):
                main.close()  # never started: no "coroutine was never awaited" warning
            raise
        try:
            await main
        finally:
            await relay.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def serve_until_signalled(
    relay: RelayServer, ready: Callable[[], None] | None = None
) -> None:
    """``mailveil relay``: serve until SIGINT or SIGTERM, then stop cleanly; ``ready`` is
    called once the relay listens (``mailveil serve``'s supervisor waits for it)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await relay.serve_forever(stop, ready)


class RelayThread:
    """A ``RelayServer`` on an event loop in its own thread (tests, benchmarks)."""

    def __init__(self, ctx: RelayContext, **kwargs: Any) -> None:
        self.ctx = ctx
        self.kwargs = kwargs
        self.server: RelayServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    @property
    def host(self) -> str:
        assert self.server is not None
        return self.server.host

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def start(self, timeout: float = 10.0) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.server = RelayServer(self.ctx, **self.kwargs)
            try:
                await self.server.start()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                await self._stop.wait()
            finally:
                await self.server.stop()

        def run() -> None:
            # asyncio.run cancels what is left (hung-up clients' tasks) before closing.
            asyncio.run(main())

        self._thread = threading.Thread(target=run, name="mailveil-relay", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("relay did not start")
        if failure:
            raise failure[0]

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until the relay's queued database writes are committed (tests, benchmarks)."""
        if self.server is None or self._loop is None or self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.server.journal.flush(), self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None


__all__ = [
    "RelaySMTP",
    "RelayServer",
    "RelayStartError",
    "RelayThread",
    "enhance",
    "serve_beside",
    "serve_until_signalled",
    "tls_context",
]
