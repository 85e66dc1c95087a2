"""The tests' one SMTP sink: an aiosmtpd server on a free loopback port, in a thread, that
keeps every message it receives, so a test can read exactly the bytes that crossed the last
hop; it can also refuse or defer at RCPT or DATA to play a remote server.

The relay's smarthost in the relay tests, the private Postfix's next hop
(``postfix_harness``), the smarthost ``mailveil doctor`` greets, and the relay benchmarks all
use this one. Free ports come from ``mailveil.demo.harness.free_port``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailveil.demo.harness import LOOPBACK, free_port

# ---------------------------------------------------------------------------------------- sink


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    peer: str
    at: float  # time.perf_counter() when the sink accepted it


@dataclass
class _SinkHandler:
    sink: Sink

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.sink.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refuse = self.sink.refuse_rcpt
        reply = refuse(address) if refuse is not None else None
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self.sink._accept(session, envelope)


class Sink:
    """An SMTP server on a free loopback port that keeps what it receives.

    ``reply`` (settable at any time) makes it answer DATA with that line instead of accepting,
    and ``refuse_rcpt`` (address -> reply line or None) refuses chosen recipients at RCPT: to
    play a remote server that refuses or defers. It offers PIPELINING (RFC 2920) as Postfix
    does -- aiosmtpd reads one command line at a time, so pipelined commands are answered in
    order -- unless ``pipelining=False``; and SMTPUTF8 unless ``smtputf8=False``.
    """

    def __init__(
        self, *, port: int | None = None, pipelining: bool = True, smtputf8: bool = True
    ) -> None:
        self.host = LOOPBACK
        self.port = port or free_port()
        self.pipelining = pipelining
        self.smtputf8 = smtputf8
        self.reply: str | None = None
        self.refuse_rcpt: Callable[[str], str | None] | None = None
        self.on_message: Callable[[Received], None] | None = None
        self._received: list[Received] = []
        self._refused = 0
        self._cond = threading.Condition()
        self._controller: Controller | None = None

    def start(self) -> Sink:
        self._controller = Controller(
            _SinkHandler(self),
            hostname=self.host,
            port=self.port,
            ready_timeout=10,
            enable_SMTPUTF8=self.smtputf8,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self, session: Session, envelope: Envelope) -> str:
        reply = self.reply
        if reply is not None:
            with self._cond:
                self._refused += 1
                self._cond.notify_all()
            return reply
        content = envelope.original_content or b""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        item = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=content,
            peer=peer,
            at=time.perf_counter(),
        )
        with self._cond:
            self._received.append(item)
            self._cond.notify_all()
        if self.on_message is not None:
            self.on_message(item)
        return "250 2.0.0 Stored"

    @property
    def messages(self) -> list[Received]:
        with self._cond:
            return list(self._received)

    @property
    def refused(self) -> int:
        with self._cond:
            return self._refused

    def clear(self) -> None:
        """Forget what was received and accept everything again."""
        with self._cond:
            self._received.clear()
            self._refused = 0
        self.reply = None
        self.refuse_rcpt = None

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 15.0
    ) -> list[Received]:
        """Block until ``predicate(messages)`` holds; fail loudly after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._received):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"sink: condition not met after {timeout}s "
                        f"({len(self._received)} received, {self._refused} refused)"
                    )
                self._cond.wait(left)
            return list(self._received)

    def wait_count(self, count: int, timeout: float = 15.0) -> list[Received]:
        return self.wait_for(lambda got: len(got) >= count, timeout)

    def wait_header(self, name: str, value: str, timeout: float = 15.0) -> Received:
        """The first received message whose header section has the field ``name: value``."""
        needle = f"\n{name}: {value}\r\n".lower().encode()

        def has(item: Received) -> bool:
            head = item.data.split(b"\r\n\r\n", 1)[0]
            return needle in b"\n" + head.lower() + b"\r\n"

        return next(m for m in self.wait_for(lambda got: any(map(has, got)), timeout) if has(m))


__all__ = ["Received", "Sink"]
