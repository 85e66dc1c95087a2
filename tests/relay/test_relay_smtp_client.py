"""The relay's smarthost client (relay/smtp_client.py) against servers on loopback: a scripted
one that records the bytes (pipelining, the exact data bytes, refusals, broken replies) and
aiosmtpd with STARTTLS and AUTH."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from hypothesis import given, settings
from hypothesis import strategies as st
from relay_server_kit import self_signed

from mailveil.demo.harness import LOOPBACK, free_port
from mailveil.relay.smtp_client import (
    ClientOptions,
    SmtpClient,
    SmtpDisconnected,
    SmtpRefused,
    Stage,
)
from mailveil.relay.smuggling import canonical_crlf, to_wire

OPTIONS = ClientOptions(local_hostname="relay.example", timeout=5.0)
MESSAGE = b"From: a@relay.example\r\nSubject: x\r\n\r\n.leading dot\r\nbody\r\n"

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(script: Script) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    return server, server.sockets[0].getsockname()[1]


async def _greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ehlo: bytes) -> None:
    writer.write(b"220 scripted ESMTP\r\n")
    assert (await reader.readline()).startswith(b"EHLO relay.example")
    writer.write(ehlo)


async def _data(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n.\r\n")


def _against(script: Script, use: Callable[[SmtpClient], Awaitable[None]]) -> None:
    """Open a client to a server running ``script`` and ``use`` it."""

    async def main() -> None:
        server, port = await _serve(script)
        async with server:
            client = await SmtpClient.open(LOOPBACK, port, OPTIONS)
            try:
                await use(client)
            finally:
                client.close()

    asyncio.run(main())


PIPELINED = b"250-scripted\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250 8BITMIME\r\n"


def test_pipelined_commands_go_out_before_any_reply() -> None:
    """The server answers nothing until it holds MAIL, RCPT and DATA: a client that waited for
    MAIL's reply before sending RCPT would hang here (and time out)."""
    seen: dict[str, bytes] = {}

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _greet(reader, writer, PIPELINED)
        seen["commands"] = await reader.readuntil(b"DATA\r\n")
        writer.write(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n")
        seen["data"] = await _data(reader)
        writer.write(b"250 2.0.0 queued\r\n")
        await reader.readline()

    async def use(client: SmtpClient) -> None:
        assert client.pipelining and client.supports("SIZE")
        await client.send("bounce@relay.example", "c@dest.example", to_wire(MESSAGE), [])

    _against(script, use)
    assert seen["commands"] == (
        b"MAIL FROM:<bounce@relay.example>\r\nRCPT TO:<c@dest.example>\r\nDATA\r\n"
    )
    assert seen["data"] == to_wire(MESSAGE)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300).filter(lambda b: b"\x00" not in b))
def test_the_data_on_the_wire_is_exactly_to_wire(body: bytes) -> None:
    """Whatever the body (bare CR or LF, lines of dots), the bytes after 354 are
    ``smuggling.to_wire``'s: canonical CRLF, dot-stuffed, ``CRLF.CRLF``."""
    seen: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _greet(reader, writer, PIPELINED)
        await reader.readuntil(b"DATA\r\n")
        writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
        seen.append(await _data(reader))
        writer.write(b"250 ok\r\n")

    async def use(client: SmtpClient) -> None:
        await client.send("b@relay.example", "c@dest.example", to_wire(body), [])

    _against(script, use)
    assert seen == [to_wire(body)]
    # What the receiver makes of it (RFC 5321 4.5.2: one leading dot removed) is the body.
    lines = seen[0][: -len(b".\r\n")].split(b"\r\n")
    unstuffed = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
    assert unstuffed == canonical_crlf(body)


def test_a_refused_recipient_ends_a_started_data_empty_and_names_the_stage() -> None:
    """RFC 2920 3.1: a server may answer 354 to a pipelined DATA although RCPT failed; the
    client then sends a lone dot, and no message body."""
    seen: dict[str, bytes] = {}

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _greet(reader, writer, PIPELINED)
        await reader.readuntil(b"DATA\r\n")
        writer.write(b"250 ok\r\n550 5.1.1 <c@dest.example> unknown\r\n354 go\r\n")
        seen["after"] = await reader.readline()
        writer.write(b"554 5.5.1 no valid recipients\r\n")
        seen["next"] = await reader.readline()
        writer.write(b"250 reset\r\n")

    async def use(client: SmtpClient) -> None:
        with pytest.raises(SmtpRefused) as refused:
            await client.send("b@relay.example", "c@dest.example", to_wire(MESSAGE), [])
        assert (refused.value.stage, refused.value.code) == (Stage.RCPT, 550)
        await client.rset()

    _against(script, use)
    assert seen == {"after": b".\r\n", "next": b"RSET\r\n"}


def test_without_pipelining_one_command_at_a_time() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _greet(reader, writer, b"250 scripted\r\n")
        for expected in (b"MAIL FROM:<b@relay.example>\r\n", b"RCPT TO:<c@dest.example>\r\n"):
            # Nothing else may be waiting: the client must wait for each reply.
            assert await reader.readline() == expected
            await asyncio.sleep(0.05)
            assert not reader._buffer  # type: ignore[attr-defined]  # what has arrived
            writer.write(b"250 ok\r\n")
        assert await reader.readline() == b"DATA\r\n"
        writer.write(b"354 go\r\n")
        await _data(reader)
        writer.write(b"250 ok\r\n")

    async def use(client: SmtpClient) -> None:
        assert not client.pipelining
        await client.send("b@relay.example", "c@dest.example", to_wire(MESSAGE), [])

    _against(script, use)


@pytest.mark.parametrize(
    ("reply", "stage", "error"),
    [
        (b"", Stage.MAIL, SmtpDisconnected),  # closed before MAIL was answered: stale
        (b"hello\r\n", Stage.MAIL, SmtpDisconnected),  # not an SMTP reply
        (b"250-" + b"x" * 5000 + b"\r\n", Stage.MAIL, SmtpDisconnected),  # line over the limit
        (b"421 4.3.2 closing\r\n", Stage.MAIL, SmtpRefused),  # closing: read no further
        (b"452 4.3.1 full\r\n550 no\r\n503 no\r\n", Stage.MAIL, SmtpRefused),
        (b"250 ok\r\n250 ok\r\n451 4.3.0 later\r\n", Stage.DATA, SmtpRefused),
        # MAIL refused for good, then the server hangs up: still that refusal, not a 4xx.
        (b"554 5.7.1 not from you\r\n", Stage.MAIL, SmtpRefused),
    ],
)
def test_broken_and_refusing_servers_raise_at_their_stage(
    reply: bytes, stage: Stage, error: type[Exception]
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _greet(reader, writer, PIPELINED)
        await reader.readuntil(b"DATA\r\n")
        writer.write(reply)
        await writer.drain()

    async def use(client: SmtpClient) -> None:
        with pytest.raises(error) as raised:
            await client.send("b@relay.example", "c@dest.example", to_wire(MESSAGE), [])
        assert raised.value.stage is stage  # type: ignore[attr-defined]

    _against(script, use)


def test_a_silent_server_times_out() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(2)

    async def main() -> None:
        server, port = await _serve(script)
        async with server:
            options = ClientOptions(local_hostname="relay.example", timeout=0.3)
            with pytest.raises(SmtpDisconnected, match="timed out"):
                await SmtpClient.open(LOOPBACK, port, options)

    asyncio.run(main())


def test_a_command_line_cannot_be_smuggled_through_an_address() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _greet(reader, writer, PIPELINED)
        await reader.read()

    async def use(client: SmtpClient) -> None:
        with pytest.raises(ValueError):
            await client.send("b@x>\r\nRCPT TO:<evil@x", "c@dest.example", b".\r\n", [])

    _against(script, use)


# ------------------------------------------------------------------- STARTTLS and AUTH


def _server_context(directory: Path) -> tuple[ssl.SSLContext, Path]:
    cert, key = self_signed(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


class _Keeper:
    def __init__(self) -> None:
        self.received: list[tuple[bool, str, bytes]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.received.append((session.ssl is not None, str(session.auth_data), envelope.content))
        return "250 2.0.0 kept"


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False, auth_data=mechanism if ok else None)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_starttls_then_auth_then_a_transaction(tmp_path: Path, mechanism: str) -> None:
    keeper = _Keeper()
    port = free_port()
    server_context, cert = _server_context(tmp_path)
    controller = Controller(
        keeper,
        hostname=LOOPBACK,
        port=port,
        tls_context=server_context,
        require_starttls=True,
        authenticator=_authenticate,
        auth_required=True,
        auth_exclude_mechanism=[m for m in ("PLAIN", "LOGIN") if m != mechanism],
        ready_timeout=10,
    )
    controller.start()
    try:
        client_context = ssl.create_default_context(cafile=cert)  # it names 127.0.0.1

        async def main(password: str) -> None:
            options = ClientOptions(
                local_hostname="relay.example",
                timeout=5.0,
                starttls=True,
                tls_context=client_context,
                username="relay",
                password=password,
            )
            client = await SmtpClient.open(LOOPBACK, port, options)
            await client.send("b@relay.example", "c@dest.example", to_wire(MESSAGE), [])
            await client.quit()

        asyncio.run(main("s3cret"))
        with pytest.raises(SmtpRefused) as refused:
            asyncio.run(main("wrong"))
        assert (refused.value.stage, refused.value.code) == (Stage.CONNECT, 535)
    finally:
        controller.stop()
    assert keeper.received == [(True, mechanism, MESSAGE)]


def test_starttls_asked_but_not_offered_fails_closed() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _greet(reader, writer, PIPELINED)
        await reader.read()

    async def main() -> None:
        server, port = await _serve(script)
        async with server:
            options = ClientOptions(local_hostname="relay.example", timeout=5.0, starttls=True)
            with pytest.raises(SmtpDisconnected, match="STARTTLS not offered"):
                await SmtpClient.open(LOOPBACK, port, options)

    asyncio.run(main())


def test_a_smarthost_that_stops_reading_the_data_times_out() -> None:
    """The body's write waits for the socket's flow control under the timeout too: a
    smarthost that stops reading cannot hold a pool slot for good."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _greet(reader, writer, PIPELINED)
        await reader.readuntil(b"DATA\r\n")
        writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await asyncio.sleep(30)  # and read nothing more

    async def main() -> None:
        server, port = await _serve(script)
        async with server:
            options = ClientOptions(local_hostname="relay.example", timeout=0.5)
            client = await SmtpClient.open(LOOPBACK, port, options)
            big = to_wire(b"Subject: x\r\n\r\n" + b"y" * 998 + b"\r\n") * 1
            body = big[: -len(b".\r\n")] * 40_000 + b".\r\n"  # ~40 MB: past every buffer
            started = time.monotonic()
            with pytest.raises(SmtpDisconnected) as raised:
                await client.send("b@relay.example", "c@dest.example", body, [])
            assert raised.value.stage is Stage.END
            assert time.monotonic() - started < 10  # the timeout, not the server's going
            client.close()

    asyncio.run(main())


def test_bytes_sent_before_tls_are_refused_not_read_as_protected() -> None:
    """STARTTLS command injection (the 2011 Postfix class): a reply line smuggled after the
    220 to STARTTLS would be read after the TLS handshake as if TLS protected it."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _greet(reader, writer, b"250-scripted\r\n250 STARTTLS\r\n")
        assert await reader.readline() == b"STARTTLS\r\n"
        writer.write(b"220 2.0.0 go ahead\r\n250-forged\r\n250 AUTH PLAIN\r\n")
        await reader.read()

    async def main() -> None:
        server, port = await _serve(script)
        async with server:
            options = ClientOptions(local_hostname="relay.example", timeout=5.0, starttls=True)
            with pytest.raises(SmtpDisconnected, match="data after the STARTTLS reply"):
                await SmtpClient.open(LOOPBACK, port, options)

    asyncio.run(main())
