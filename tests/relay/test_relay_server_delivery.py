"""Delivery to the smarthost: the replies we make of the smarthost's, and the connection pool
surviving a smarthost that restarts (the bytes on the wire: test_relay_smtp_client.py)."""

from __future__ import annotations

import asyncio

import pytest

from mailveil.demo.harness import free_port
from mailveil.relay import codes
from mailveil.relay.delivery import (
    PermanentDeliveryError,
    Smarthost,
    SmarthostConfig,
    TemporaryDeliveryError,
    reply_for_next_hop,
)
from smtp_kit import Sink


@pytest.mark.parametrize(
    ("code", "text", "reply"),
    [
        (550, "5.1.1 <real@x.example>: Recipient address rejected", codes.NEXT_HOP_NO_MAILBOX),
        (550, "5.2.1 Mailbox disabled", codes.NEXT_HOP_MAILBOX_DISABLED),
        (552, "Message too large", codes.NEXT_HOP_TOO_BIG),
        (554, "5.7.1 Relay access denied", codes.NEXT_HOP_POLICY),
        (554, "Transaction failed", codes.NEXT_HOP_REFUSED),
        (452, "4.2.2 Mailbox full", codes.NEXT_HOP_MAILBOX_BUSY),
        (451, "4.3.0 Try again", codes.NEXT_HOP_DEFERRED),
        (421, "Service not available", codes.NEXT_HOP_DEFERRED),
    ],
)
def test_next_hop_replies_become_ours(code: int, text: str, reply: codes.Reply) -> None:
    assert reply_for_next_hop(code, text) == reply
    assert "@" not in reply.text


def _smarthost(port: int, timeout: float = 5.0) -> Smarthost:
    return Smarthost(
        SmarthostConfig("127.0.0.1", port, 2, timeout, False, True, "", "", "relay.example")
    )


MESSAGE = b"From: a@relay.example\r\nSubject: x\r\n\r\n.leading dot\r\nbody\r\n"


def test_pool_reconnects_after_the_smarthost_restarts() -> None:
    port = free_port()

    async def send(host: Smarthost) -> None:
        await host.send("bounce+x@relay.example", "someone@dest.example", MESSAGE)

    async def main() -> None:
        host = _smarthost(port)
        with Sink(port=port) as sink:
            await send(host)
            await send(host)  # same pooled connection
            assert len(sink.messages) == 2
        with Sink(port=port) as sink:
            await send(host)  # the pooled connection is dead: a fresh one, no error
            assert [m.data for m in sink.messages] == [MESSAGE]
        with pytest.raises(TemporaryDeliveryError) as down:
            await send(host)
        assert down.value.reply == codes.SMARTHOST_UNREACHABLE
        await host.close()

    asyncio.run(main())


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_refusals_at_each_stage_are_typed(pipelining: bool) -> None:
    port = free_port()

    async def main() -> None:
        host = _smarthost(port)
        with Sink(port=port, pipelining=pipelining) as sink:
            sink.refuse_rcpt = lambda rcpt: "550 5.1.1 <someone@dest.example>: unknown"
            with pytest.raises(PermanentDeliveryError) as refused:
                await host.send("bounce+x@relay.example", "someone@dest.example", MESSAGE)
            assert refused.value.reply == codes.NEXT_HOP_NO_MAILBOX
            assert refused.value.next_hop_code == 550
            assert "someone" not in str(refused.value)
            sink.refuse_rcpt = None
            sink.reply = "451 4.7.1 Greylisted"
            with pytest.raises(TemporaryDeliveryError):
                await host.send("bounce+x@relay.example", "someone@dest.example", MESSAGE)
            sink.reply = None
            await host.send("bounce+x@relay.example", "someone@dest.example", MESSAGE)
            assert len(sink.messages) == 1
        await host.close()

    asyncio.run(main())


def test_a_non_ascii_address_needs_a_smarthost_that_speaks_smtputf8() -> None:
    """RFC 6531 3.4: without SMTPUTF8 the address cannot be sent; the sender gets a 5.6.7 at
    once instead of a retry that can never work."""
    port = free_port()

    async def main() -> None:
        host = _smarthost(port)
        with Sink(port=port, smtputf8=False) as sink:
            with pytest.raises(PermanentDeliveryError) as refused:
                await host.send("bounce+x@relay.example", "jörg@dest.example", MESSAGE)
            assert refused.value.reply == codes.NON_ASCII_ADDRESS
            await host.send("bounce+x@relay.example", "someone@dest.example", MESSAGE)
            assert len(sink.messages) == 1  # the connection is still good
        await host.close()
        host = _smarthost(port)
        with Sink(port=port) as sink:
            await host.send("bounce+x@relay.example", "jörg@dest.example", MESSAGE)
            assert [m.rcpt_tos for m in sink.messages] == [("jörg@dest.example",)]
        await host.close()

    asyncio.run(main())


def test_a_421_waiting_on_an_idle_pooled_connection_is_retried_on_a_fresh_one() -> None:
    """A smarthost that closes idle clients says 421 first; the pool reads it at the next
    MAIL, before any data went out, so the message goes on a new connection at once instead
    of a needless 4xx to the sender."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        writer.write(b"220 scripted\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250-scripted\r\n250 PIPELINING\r\n")
        if len(connections) == 1:
            await reader.readuntil(b"DATA\r\n")  # the first message
            writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
            await reader.readuntil(b"\r\n.\r\n")
            writer.write(b"250 queued\r\n421 4.4.2 idle too long, closing\r\n")
            await writer.drain()
        else:
            await reader.readuntil(b"DATA\r\n")
            writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
            await reader.readuntil(b"\r\n.\r\n")
            writer.write(b"250 queued\r\n")
            await reader.read()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            host = _smarthost(port)
            await host.send("bounce+x@relay.example", "someone@dest.example", MESSAGE)
            await asyncio.sleep(0.1)  # the 421 arrives while the connection is idle
            await host.send("bounce+x@relay.example", "someone@dest.example", MESSAGE)
            await host.close()

    asyncio.run(main())
    assert connections == [0, 1]
