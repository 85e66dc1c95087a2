"""The relay's memory over a long mixed stream (benchmarks/relay.py --memory): is its RSS flat?

The stream, message i by i % 20: eleven in twenty plain text of 1-8 KB, four multipart with
a 20-60 KB attachment, two with a 100-200 KB attachment, one multipart/alternative (text and
HTML), and two hostile (``--memory-hostile`` sets the share): the hostile-mail corpus
(tests/relay/hostile_mail.py: nesting, part, header and parameter floods, encoded-word and
Received bombs, broken encodings, at and past each limit) and the bad-input shapes of
tests/relay/test_relay_server.py (BAD_INPUT: missing or doubled From, 8-bit headers,
malformed MIME, header injection). Each names the seller's real address (redaction works on
every message) and carries its number in Subject and Message-ID.

The relay is the benchmark's relay process (RelayServer, every check on). Messages go in
batches over ``--concurrency`` connections; after each batch the sink must hold exactly the
accepted ones (then it is emptied: it would otherwise hold gigabytes), and the relay's RSS
is read from /proc/<pid>/status. The verdict compares RSS after ``--memory-n`` messages with
RSS after ``--memory-first``; the series in between shows whether growth flattens (allocator
high-water: pages kept after a burst of large messages) or keeps climbing (a leak).
``--memory-trace`` also has the relay diff two tracemalloc snapshots (at the first checkpoint
and the end), which names the Python lines holding any growth.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import aiosmtplib
from rich.console import Console

from _relay_kit import HARNESS, SELLER, World

Verdict = tuple[str, str, bool | None]
LABEL = "memory flat: RSS at 100,000 mixed msgs within 10 % of at 10,000"


def rss_of(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _head(i: int, alias: str, extra: str = "") -> bytes:
    return (
        f"From: Acme Bench <{SELLER}>\r\nTo: {alias}\r\nSubject: [shipping] Parcel bench-{i}\r\n"
        "Date: Tue, 01 Oct 2024 10:00:00 +0200\r\n"
        f"Message-ID: <bench-{i}@acme-bench.example>\r\nMIME-Version: 1.0\r\n{extra}"
    ).encode()


def _text(size: int) -> bytes:
    line = b"Your parcel left our warehouse today and should arrive within two days.\r\n"
    body = f"Hello,\r\n\r\nQuestions? Write to {SELLER}.\r\n\r\n".encode()
    return body + line * max(1, size // len(line))


_BLOBS: dict[int, bytes] = {}


def _blob(size: int) -> bytes:
    """A base64 PDF of about ``size`` bytes (random content: nothing compresses or repeats)."""
    if size not in _BLOBS:
        raw = b"%PDF-1.4\n" + random.Random(size).randbytes(size * 3 // 4)
        _BLOBS[size] = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    return _BLOBS[size]


def _with_attachment(i: int, alias: str, size: int) -> bytes:
    return (
        _head(i, alias, "Content-Type: multipart/mixed; boundary=z\r\n\r\n")
        + b"--z\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + _text(1500)
        + b"--z\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        + b'Content-Disposition: attachment; filename="invoice.pdf"\r\n\r\n'
        + _blob(size)
        + b"--z--\r\n"
    )


def _alternative(i: int, alias: str) -> bytes:
    html = b"<html><body><p>" + _text(4000).replace(b"\r\n", b"<br>\r\n") + b"</p></body></html>"
    return (
        _head(i, alias, "Content-Type: multipart/alternative; boundary=alt\r\n\r\n")
        + b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + _text(4000)
        + b"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        + html
        + b"\r\n--alt--\r\n"
    )


def _bad_input() -> list[Callable[[int, str], bytes]]:
    """test_relay_server.BAD_INPUT's shapes (that module is a test module, with fixtures)."""

    def fields(extra: bytes) -> Callable[[int, str], bytes]:
        return lambda i, alias: _head(i, alias) + extra + b"\r\n" + _text(600)

    def missing_from(i: int, alias: str) -> bytes:
        return b"\r\n".join(line for line in _head(i, alias).split(b"\r\n") if not
                            line.startswith(b"From:")) + b"\r\n" + _text(600)  # fmt: skip

    return [
        missing_from,
        fields(f"From: {SELLER}\r\n".encode()),
        fields(b"X-Note: caf\xe9\r\n"),
        fields(b"".join(b"X-H%d: v\r\n" % n for n in range(3000))),
        fields(b"Content-Type: multipart/mixed\r\n\r\n--x\r\n"),
        fields(b"X-Note: hi\x0bBcc: victim@example.org\r\n"),
        fields(b"X-Long: " + b"a" * 991 + b"\r\n"),
    ]


def _hostile_corpus(limit: int) -> list[Callable[[int, str], bytes]]:
    """The corpus with its size-limit shapes (attachments of half and all of ``limit``) at
    ``limit`` bytes."""
    sys.path[:0] = [str(HARNESS), str(HARNESS.parent)]
    from hostile_mail import shapes  # type: ignore[import-not-found,unused-ignore]

    out: list[Callable[[int, str], bytes]] = []
    for shape in shapes(limit):
        body = shape.body()
        # Exact-bytes shapes (bare LF, NUL) need a raw socket, not an SMTP client's fix-ups.
        if shape.wire or len(body) > 2 * limit:
            continue
        # hostile_mail's head with this message's number (Message-ID: retries are matched on it).
        out.append(lambda i, alias, body=body: _head(i, alias) + body)
    return out + _bad_input()


class Corpus:
    def __init__(self, world: World, hostile_share: float, limit: int) -> None:
        self.targets = world.targets
        self.hostile = _hostile_corpus(limit)
        self.hostile_in_20 = round(20 * hostile_share)

    def message(self, i: int) -> tuple[str, bytes]:
        alias = self.targets[i % len(self.targets)][0]
        slot = i % 20
        if slot >= 20 - self.hostile_in_20:
            return alias, self.hostile[(i // 20 + slot) % len(self.hostile)](i, alias)
        if slot < 11:
            plain = _head(i, alias, "Content-Type: text/plain; charset=utf-8\r\n\r\n")
            return alias, plain + _text(1024 * (1 + (i // 20) % 8))
        if slot < 15:
            return alias, _with_attachment(i, alias, 1024 * (20 + 20 * ((i // 20) % 3)))
        if slot < 17:
            return alias, _with_attachment(i, alias, 1024 * (100 + 50 * ((i // 20) % 3)))
        return alias, _alternative(i, alias)


async def _client(
    port: int, items: list[tuple[int, str, bytes]], login: tuple[str, str]
) -> tuple[list[int], Counter[str]]:
    """Send each; refusals are expected (hostile shapes) and counted by reply code; a dropped
    connection is re-opened."""
    accepted: list[int] = []
    refused: Counter[str] = Counter()
    smtp: aiosmtplib.SMTP | None = None
    for i, alias, data in items:
        if smtp is None or not smtp.is_connected:
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120,
                                   local_hostname="bench.client.example")  # fmt: skip
            await smtp.connect()
            await smtp.login(*login)
        try:
            await smtp.sendmail(SELLER, [alias], data)
            accepted.append(i)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused[str(exc.recipients[0].code)] += 1
        except aiosmtplib.SMTPResponseException as exc:
            refused[str(exc.code)] += 1
            if exc.code == 421:
                smtp = None
        except aiosmtplib.SMTPServerDisconnected:
            refused["disconnected"] += 1
            smtp = None
        except aiosmtplib.SMTPTimeoutError:
            # Seen with --memory-trace and 25 MiB messages: tracemalloc slows the relay's
            # parsing of one past the client's patience. Counted, and a new connection.
            refused["timeout"] += 1
            smtp.close()
            smtp = None
    if smtp is not None and smtp.is_connected:
        await smtp.quit()
    return accepted, refused


def send_batch(
    port: int, corpus: Corpus, lo: int, hi: int, concurrency: int, login: tuple[str, str]
) -> tuple[list[int], Counter[str]]:
    items = [(i, *corpus.message(i)) for i in range(lo, hi)]
    chunks = [items[k::concurrency] for k in range(concurrency)]

    async def run() -> list[tuple[list[int], Counter[str]]]:
        return await asyncio.gather(*(_client(port, c, login) for c in chunks if c))

    accepted: list[int] = []
    refused: Counter[str] = Counter()
    for got, why in asyncio.run(run()):
        accepted += got
        refused += why
    return accepted, refused


def drain(sinks: Connection, accepted: list[int], timeout: float = 300) -> list[str]:
    """Wait until the sink holds every accepted message, check each is there once, empty it."""
    deadline = time.monotonic() + timeout
    while True:
        sinks.send(("count", "mailveil"))
        if sinks.recv() >= len(accepted) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # a doubled message would arrive after the last one
    sinks.send(("arrivals", "mailveil"))
    arrived = Counter(token for token, _ in sinks.recv())
    sinks.send(("clear", "mailveil"))
    sinks.recv()
    problems = []
    lost = len(set(accepted) - set(arrived))
    doubled = sum(c - 1 for c in arrived.values() if c > 1)
    extra = len(set(arrived) - set(accepted))
    if lost or doubled or extra:
        problems.append(f"sink: {lost} lost, {doubled} doubled, {extra} not accepted")
    return problems


def memory(
    args: argparse.Namespace,
    world: World,
    relay: Connection,
    relay_pid: int,
    port: int,
    sinks: Connection,
    start_id: int,
    console: Console,
) -> Verdict:
    """The whole run in the relay process ``relay_pid``; the verdict row."""
    corpus = Corpus(world, args.memory_hostile, args.memory_hostile_limit)
    login = ("acme-bench", world.seller_key)
    total, first = args.memory_n, min(args.memory_first, args.memory_n)
    step = max(1, min(args.memory_batch, first))
    readings: list[tuple[int, float]] = []
    refused: Counter[str] = Counter()
    problems: list[str] = []
    accepted_total = 0
    trace = ""
    started = time.perf_counter()
    console.print(
        f"memory run: {total:,} messages (1-200 KB, {corpus.hostile_in_20}/20 hostile from "
        f"{len(corpus.hostile)} shapes), RSS read every {step:,}; relay RSS at start "
        f"{rss_of(relay_pid):.0f} MiB"
    )
    sinks.send(("clear", "mailveil"))  # the earlier runs' messages
    sinks.recv()
    done = 0
    while done < total:
        hi = min(total, done + step)
        accepted, why = send_batch(port, corpus, start_id + done, start_id + hi, args.concurrency,
                                   login)  # fmt: skip
        problems += drain(sinks, accepted)
        refused += why
        accepted_total += len(accepted)
        done = hi
        readings.append((done, rss_of(relay_pid)))
        if done == first and args.memory_trace:
            relay.send("trace-start")
            relay.recv()
        if done in (first, total) or len(readings) % 10 == 0:
            console.print(
                f"  {done:>8,} messages: RSS {readings[-1][1]:6.0f} MiB "
                f"({done / (time.perf_counter() - started):,.0f} msg/s)"
            )
    if args.memory_trace:
        relay.send("trace-diff")
        trace = relay.recv()
    at_first = next(r for n, r in readings if n >= first)
    at_end = readings[-1][1]
    growth = (at_end - at_first) / at_first
    every = readings[:: max(1, len(readings) // 12)]
    series = ", ".join(f"{n / 1000:g}k {r:.0f}" for n, r in every)
    console.print(
        f"RSS (MiB) by messages: {series}, {total / 1000:g}k {at_end:.0f}; "
        f"accepted {accepted_total:,}, refused by reply {dict(refused)}",
        markup=False,
    )
    if trace:
        console.print(trace, markup=False)
    if problems:
        console.print("memory run problems: " + "; ".join(problems[:5]), markup=False)
    label = LABEL if (first, total) == (10_000, 100_000) else (
        f"memory flat: RSS at {total:,} mixed msgs within 10 % of at {first:,} (not the "
        "target's 100,000 vs 10,000)")  # fmt: skip
    return (
        label,
        f"{at_first:.0f} -> {at_end:.0f} MiB ({growth:+.1%}); {accepted_total:,} delivered, "
        f"{sum(refused.values()):,} refused" + ("; SINK PROBLEMS" if problems else ""),
        abs(growth) <= 0.10 and not problems,
    )
