"""Delivery: handing each rewritten message to the smarthost, before the sender gets its 250.

Before-queue relaying (the choice, and why)
    The relay keeps no queue of its own. It answers the sender's end of DATA only after the
    smarthost (Postfix, a cloud SMTP service) has answered the relay's: 250 from the smarthost
    becomes 250 to the sender; a smarthost that is down, slow or answers 4xx becomes a 4xx to
    the sender, who keeps the message and retries (RFC 5321 4.5.4); a 5xx becomes a 5xx, which
    makes the sender's own MTA bounce it with our reason. Durability is the smarthost's queue
    and the sender's: a message is never only in the relay's memory after someone was told it
    was accepted, so killing the relay mid-message loses nothing (the sender never saw 250).
    The cost is the smarthost's latency inside the sender's DATA reply, which is why
    connections to it are pooled and kept open.

Replies never carry the smarthost's text: it often names the recipient, who is the other
side. The smarthost's code is mapped to one of ours (``codes.NEXT_HOP_*``) by its class and
enhanced status subject; the original code is kept only as a number for the ledger.

Outgoing bytes
    The rewriter produces canonical CRLF (``smuggling.canonical_crlf``); ``smuggling.to_wire``
    makes the exact bytes after 354 (any stray bare CR or LF as CRLF, every line that starts
    with "." dot-stuffed, ``CRLF.CRLF`` at the end), sent by ``relay/smtp_client.py`` -- which
    pipelines MAIL, RCPT and DATA when the smarthost offers PIPELINING.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from dataclasses import dataclass

from mailveil.config import Settings
from mailveil.relay import codes
from mailveil.relay.codes import Reply
from mailveil.relay.errors import NulInData
from mailveil.relay.smtp_client import (
    ClientOptions,
    SmtpClient,
    SmtpDisconnected,
    SmtpRefused,
    Stage,
)
from mailveil.relay.smuggling import to_wire

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
# An idle pooled connection older than this is closed rather than reused: smarthosts drop
# idle clients (Postfix's smtpd_timeout is 300 s) and a stale socket costs a failed MAIL.
MAX_IDLE_SECONDS = 60.0


class DeliveryError(Exception):
    """The smarthost did not take the message. ``reply`` is what the sender is told."""

    def __init__(self, reply: Reply, *, next_hop_code: int | None = None) -> None:
        super().__init__(f"{reply.code} {reply.enhanced} (next hop {next_hop_code or '-'})")
        self.reply = reply
        self.next_hop_code = next_hop_code


class TemporaryDeliveryError(DeliveryError):
    """Try again later (smarthost unreachable, timed out or 4xx)."""


class PermanentDeliveryError(DeliveryError):
    """The smarthost refused the message for good (5xx)."""


class _Stale(Exception):
    """A pooled connection turned out closed before MAIL was answered."""


def reply_for_next_hop(code: int, text: str) -> Reply:
    """Our reply for a smarthost's ``code`` and text (only its enhanced code is read)."""
    match = _ENHANCED.match(text or "")
    subject = (match.group(2), match.group(3)) if match else ("0", "0")
    if 400 <= code < 500:
        if subject == ("2", "2"):
            return codes.NEXT_HOP_MAILBOX_BUSY
        return codes.NEXT_HOP_DEFERRED
    if subject[0] == "1":
        return codes.NEXT_HOP_NO_MAILBOX
    if subject[0] == "2":
        return codes.NEXT_HOP_MAILBOX_DISABLED
    if subject == ("3", "4") or code == 552:
        return codes.NEXT_HOP_TOO_BIG
    if subject[0] == "7":
        return codes.NEXT_HOP_POLICY
    return codes.NEXT_HOP_REFUSED


def _raise_for(exc: SmtpRefused) -> DeliveryError:
    reply = reply_for_next_hop(exc.code, exc.text)
    kind = TemporaryDeliveryError if reply.code < 500 else PermanentDeliveryError
    return kind(reply, next_hop_code=exc.code)


@dataclass
class _Connection:
    smtp: SmtpClient
    last_used: float


@dataclass(frozen=True)
class SmarthostConfig:
    host: str
    port: int
    pool_size: int
    timeout: float
    starttls: bool
    validate_certs: bool
    username: str
    password: str
    local_hostname: str

    @classmethod
    def from_settings(cls, settings: Settings) -> SmarthostConfig:
        return cls(
            host=settings.smarthost_host,
            port=settings.smarthost_port,
            pool_size=settings.smarthost_pool_size,
            timeout=settings.smarthost_timeout,
            starttls=settings.smarthost_starttls,
            validate_certs=settings.smarthost_validate_certs,
            username=settings.smarthost_username,
            password=settings.smarthost_password,
            local_hostname=settings.relay_hostname or settings.relay_domain,
        )


class Smarthost:
    """A small pool of persistent SMTP connections to the smarthost.

    At most ``pool_size`` transactions run at once (one per connection); a caller waits for a
    free connection at most ``timeout`` seconds, then gets a temporary failure. Must be used
    from one event loop.
    """

    def __init__(self, config: SmarthostConfig) -> None:
        self.config = config
        self._idle: list[_Connection] = []
        self._slots: asyncio.Semaphore | None = None
        self.sent = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Smarthost:
        return cls(SmarthostConfig.from_settings(settings))

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.pool_size)
        return self._slots

    async def _connect(self) -> _Connection:
        cfg = self.config
        tls_context = None
        if cfg.starttls and not cfg.validate_certs:
            tls_context = ssl.create_default_context()
            tls_context.check_hostname = False
            tls_context.verify_mode = ssl.CERT_NONE
        options = ClientOptions(
            local_hostname=cfg.local_hostname,
            timeout=cfg.timeout,
            starttls=cfg.starttls,
            tls_context=tls_context,
            username=cfg.username,
            password=cfg.password,
        )
        try:
            smtp = await SmtpClient.open(cfg.host, cfg.port, options)
        except SmtpRefused as exc:
            raise TemporaryDeliveryError(
                codes.SMARTHOST_UNREACHABLE, next_hop_code=exc.code
            ) from None
        except (SmtpDisconnected, OSError, ssl.SSLError):
            raise TemporaryDeliveryError(codes.SMARTHOST_UNREACHABLE) from None
        return _Connection(smtp, time.monotonic())

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.smtp.is_connected and now - conn.last_used < MAX_IDLE_SECONDS:
                return conn
            conn.smtp.close()
        return None

    async def send(self, mail_from: str, rcpt: str, data: bytes) -> None:
        """Deliver ``data`` (CRLF lines, not dot-stuffed) for one recipient.

        Returns when the smarthost answered 250 to the end of DATA; raises
        ``TemporaryDeliveryError`` or ``PermanentDeliveryError`` otherwise.
        """
        slots = self._semaphore()
        try:
            await asyncio.wait_for(slots.acquire(), timeout=self.config.timeout)
        except TimeoutError:
            raise TemporaryDeliveryError(codes.SMARTHOST_UNREACHABLE) from None
        try:
            conn = self._take_idle()
            if conn is not None:
                try:
                    await self._transaction(conn.smtp, mail_from, rcpt, data)
                except _Stale:
                    # The smarthost had dropped this pooled connection before MAIL was
                    # answered: nothing was sent, so a fresh connection cannot duplicate.
                    conn.smtp.close()
                    conn = None
                except BaseException:
                    conn.smtp.close()
                    raise
            if conn is None:
                conn = await self._connect()
                try:
                    await self._transaction(conn.smtp, mail_from, rcpt, data)
                except _Stale:
                    conn.smtp.close()
                    raise TemporaryDeliveryError(codes.SMARTHOST_UNREACHABLE) from None
                except BaseException:
                    conn.smtp.close()
                    raise
            conn.last_used = time.monotonic()
            self._idle.append(conn)
            self.sent += 1
        finally:
            slots.release()

    async def _transaction(self, smtp: SmtpClient, mail_from: str, rcpt: str, data: bytes) -> None:
        options = []
        if smtp.supports("size"):
            options.append(f"SIZE={len(data)}")
        if smtp.supports("8bitmime") and max(data, default=0) > 0x7F:
            options.append("BODY=8BITMIME")
        if not (mail_from + rcpt).isascii():
            if not smtp.supports("smtputf8"):
                raise PermanentDeliveryError(codes.NON_ASCII_ADDRESS)
            options.append("SMTPUTF8")
        try:
            await smtp.send(mail_from, rcpt, to_wire(data), options)
        except SmtpDisconnected as exc:
            if exc.stage is Stage.MAIL:
                # Lost before MAIL was answered (a pooled connection the smarthost had
                # dropped): nothing was sent, so a fresh connection cannot duplicate.
                raise _Stale from None
            # Once the data went out the smarthost may have queued the message; the sender
            # retries, so the worst case is a duplicate (RFC 1047), never a loss.
            raise TemporaryDeliveryError(codes.SMARTHOST_UNREACHABLE) from None
        except SmtpRefused as exc:
            if exc.code == 421 and exc.stage is Stage.MAIL:
                # The smarthost closed an idle pooled connection (its 421 waited unread):
                # nothing was sent, so a fresh connection cannot duplicate.
                raise _Stale from None
            # No RSET: send() closes the connection after any failure.
            raise _raise_for(exc) from None
        except (NulInData, ValueError):
            raise PermanentDeliveryError(codes.NEXT_HOP_REFUSED) from None
        except OSError:
            raise TemporaryDeliveryError(codes.SMARTHOST_UNREACHABLE) from None

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                async with asyncio.timeout(2):
                    await conn.smtp.quit()
            except (SmtpDisconnected, SmtpRefused, OSError, TimeoutError):
                pass
            finally:
                conn.smtp.close()


__all__ = [
    "DeliveryError",
    "PermanentDeliveryError",
    "Smarthost",
    "SmarthostConfig",
    "TemporaryDeliveryError",
    "reply_for_next_hop",
]
