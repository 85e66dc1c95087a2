"""The relay's SMTP client for its smarthost: one connection, pipelined transactions.

Why not aiosmtplib (used before): every command was one write and one wait, and its protocol
keeps one reply waiter and drops bytes that arrive before it is re-armed, so it cannot
pipeline. The relay's transaction with its smarthost is always the same -- MAIL, one RCPT,
DATA, the body -- and it sits inside every sender's DATA reply (before-queue delivery). With
PIPELINING (RFC 2920, which Postfix and the cloud services advertise) it is two writes and two
waits instead of four, which halves the smarthost's round trips in the sender's latency and the
event-loop turns the relay spends on them. Without PIPELINING it falls back to one command at
a time. STARTTLS (RFC 3207) and AUTH PLAIN / LOGIN (RFC 4954) are done once, when the
connection opens.

Errors say at which stage they happened (``Stage``): the delivery pool needs to know whether the
smarthost could have taken the message (a connection lost before MAIL's reply cannot have).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; tolerate more, but not without bound.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100
_FORBIDDEN = frozenset("\r\n\x00<>")


class Stage(Enum):
    CONNECT = "connect"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    END = "end of data"
    OTHER = "other"


class SmtpReply(NamedTuple):
    code: int
    text: str


class SmtpError(Exception):
    """The smarthost did not answer as it should; ``stage`` says where."""

    def __init__(self, stage: Stage, detail: str) -> None:
        super().__init__(f"{stage.value}: {detail}")
        self.stage = stage


class SmtpDisconnected(SmtpError):
    """The connection closed, timed out or sent something that is not an SMTP reply."""


class SmtpRefused(SmtpError):
    """The smarthost answered with an error ``code`` (its ``text`` may name the recipient:
    it is never shown to the sender)."""

    def __init__(self, stage: Stage, reply: SmtpReply) -> None:
        super().__init__(stage, str(reply.code))
        self.code = reply.code
        self.text = reply.text


@dataclass(frozen=True)
class ClientOptions:
    local_hostname: str
    timeout: float
    starttls: bool = False
    tls_context: ssl.SSLContext | None = None
    username: str = ""
    password: str = ""


def _path(address: str) -> bytes:
    """``address`` as an SMTP path (``<...>``); refuses what could smuggle a command."""
    if _FORBIDDEN.intersection(address):
        raise ValueError("address contains a character not allowed on an SMTP command line")
    return b"<" + address.encode("utf-8") + b">"


class SmtpClient:
    """One open, greeted (and if asked, TLS-wrapped and authenticated) SMTP connection."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = timeout
        self.extensions: dict[str, str] = {}

    @classmethod
    async def open(cls, host: str, port: int, options: ClientOptions) -> SmtpClient:
        """Connect, read the greeting, EHLO, then STARTTLS and AUTH when ``options`` ask."""
        try:
            async with asyncio.timeout(options.timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=MAX_REPLY_LINE)
        except (OSError, TimeoutError) as exc:
            raise SmtpDisconnected(Stage.CONNECT, type(exc).__name__) from None
        client = cls(reader, writer, options.timeout)
        try:
            await client._expect(Stage.CONNECT, 220)
            await client._ehlo(options.local_hostname)
            if options.starttls:
                if "starttls" not in client.extensions:
                    raise SmtpDisconnected(Stage.CONNECT, "STARTTLS not offered")
                await client._command(Stage.CONNECT, b"STARTTLS", 220)
                if client._reader._buffer:  # type: ignore[attr-defined]
                    # Bytes sent before TLS would be read as if TLS protected them (the
                    # "STARTTLS command injection" class of bug): refuse the connection.
                    raise SmtpDisconnected(Stage.CONNECT, "data after the STARTTLS reply")
                context = options.tls_context or ssl.create_default_context()
                async with asyncio.timeout(options.timeout):
                    await writer.start_tls(context, server_hostname=host)
                await client._ehlo(options.local_hostname)
            if options.username:
                await client._auth(options.username, options.password)
        except (SmtpError, OSError, ssl.SSLError, TimeoutError):
            await client.aclose()
            raise
        except BaseException:
            client.close()
            raise
        return client

    @property
    def is_connected(self) -> bool:
        return not self._writer.is_closing() and not self._reader.at_eof()

    @property
    def pipelining(self) -> bool:
        return "pipelining" in self.extensions

    def supports(self, extension: str) -> bool:
        return extension.lower() in self.extensions

    # ------------------------------------------------------------------ replies and commands

    async def _reply(self, stage: Stage) -> SmtpReply:
        lines: list[bytes] = []
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    line = await self._reader.readline()
                    if not line.endswith(b"\n"):
                        raise SmtpDisconnected(stage, "connection closed")
                    code, sep = line[:3], line[3:4]
                    if not code.isdigit() or sep not in (b" ", b"-", b"\r", b"\n"):
                        raise SmtpDisconnected(stage, "not an SMTP reply")
                    lines.append(line[4:].strip())
                    if sep != b"-":
                        return SmtpReply(int(code), b"\n".join(lines).decode("utf-8", "replace"))
                    if len(lines) >= MAX_REPLY_LINES:
                        raise SmtpDisconnected(stage, "reply too long")
        except TimeoutError:
            raise SmtpDisconnected(stage, "timed out") from None
        except (ValueError, OSError) as exc:  # a line over the limit; a reset connection
            raise SmtpDisconnected(stage, type(exc).__name__) from None

    async def _expect(self, stage: Stage, *ok: int) -> SmtpReply:
        reply = await self._reply(stage)
        if reply.code not in ok:
            raise SmtpRefused(stage, reply)
        return reply

    def _write(self, stage: Stage, data: bytes) -> None:
        if self._writer.is_closing():
            raise SmtpDisconnected(stage, "connection closed")
        self._writer.write(data)

    async def _command(self, stage: Stage, line: bytes, *ok: int) -> SmtpReply:
        self._write(stage, line + b"\r\n")
        return await self._expect(stage, *ok)

    async def _ehlo(self, local_hostname: str) -> None:
        reply = await self._command(Stage.CONNECT, b"EHLO " + local_hostname.encode("idna"), 250)
        extensions: dict[str, str] = {}
        for line in reply.text.split("\n")[1:]:
            name, _, params = line.partition(" ")
            extensions[name.lower()] = params
        self.extensions = extensions

    async def _auth(self, username: str, password: str) -> None:
        mechanisms = self.extensions.get("auth", "").upper().split()
        if "PLAIN" in mechanisms:
            token = base64.b64encode(f"\0{username}\0{password}".encode())
            await self._command(Stage.CONNECT, b"AUTH PLAIN " + token, 235)
        elif "LOGIN" in mechanisms:
            await self._command(Stage.CONNECT, b"AUTH LOGIN", 334)
            await self._command(Stage.CONNECT, base64.b64encode(username.encode()), 334)
            await self._command(Stage.CONNECT, base64.b64encode(password.encode()), 235)
        else:
            raise SmtpDisconnected(Stage.CONNECT, "no AUTH mechanism this client speaks")

    # --------------------------------------------------------------------- the transaction

    async def send(self, mail_from: str, rcpt: str, wire: bytes, options: list[str]) -> None:
        """One transaction: ``wire`` is the message as it goes after 354 (``smuggling.to_wire``:
        CRLF lines, dot-stuffed, ending with ``.CRLF``). Returns on 250 after the data; raises
        ``SmtpRefused`` or ``SmtpDisconnected`` naming the stage."""
        mail = b"MAIL FROM:" + _path(mail_from) + b"".join(b" " + o.encode() for o in options)
        to = b"RCPT TO:" + _path(rcpt)
        if self.pipelining:
            self._write(Stage.MAIL, mail + b"\r\n" + to + b"\r\nDATA\r\n")
            replies: list[SmtpReply] = []
            for stage in (Stage.MAIL, Stage.RCPT, Stage.DATA):
                try:
                    replies.append(await self._reply(stage))
                except SmtpDisconnected:
                    if replies and replies[0].code != 250:
                        raise SmtpRefused(Stage.MAIL, replies[0]) from None  # its refusal
                    raise
                if replies[-1].code == 421:  # closing: no more replies will come
                    raise SmtpRefused(stage, replies[-1])
            mail_ok, rcpt_ok = replies[0].code == 250, replies[1].code in (250, 251)
            for stage, reply, ok in (
                (Stage.MAIL, replies[0], mail_ok),
                (Stage.RCPT, replies[1], rcpt_ok),
            ):
                if not ok:
                    if replies[2].code == 354:
                        # RFC 2920 3.1: DATA was taken with no valid recipient; end it empty.
                        self._write(Stage.END, b".\r\n")
                        await self._reply(Stage.END)
                    raise SmtpRefused(stage, reply)
            if replies[2].code != 354:
                raise SmtpRefused(Stage.DATA, replies[2])
        else:
            await self._command(Stage.MAIL, mail, 250)
            await self._command(Stage.RCPT, to, 250, 251)
            await self._command(Stage.DATA, b"DATA", 354)
        self._write(Stage.END, wire)
        try:  # a large message waits for the socket's flow control: not without bound
            async with asyncio.timeout(self._timeout):
                await self._writer.drain()
        except TimeoutError:
            raise SmtpDisconnected(Stage.END, "timed out sending the data") from None
        except OSError as exc:
            raise SmtpDisconnected(Stage.END, type(exc).__name__) from None
        await self._expect(Stage.END, 250)

    async def rset(self) -> None:
        await self._command(Stage.OTHER, b"RSET", 250)

    async def quit(self) -> None:
        try:
            await self._command(Stage.OTHER, b"QUIT", 221)
        finally:
            await self.aclose()

    def close(self) -> None:
        self._writer.close()

    async def aclose(self) -> None:
        """Close and wait (briefly) until closed: a TLS connection says goodbye first."""
        self._writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(self._timeout):
                await self._writer.wait_closed()


__all__ = [
    "ClientOptions",
    "SmtpClient",
    "SmtpDisconnected",
    "SmtpError",
    "SmtpRefused",
    "SmtpReply",
    "Stage",
]
