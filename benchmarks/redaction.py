"""What redaction costs per message, beside the floor of reading and writing the message at all.

    .venv/bin/python benchmarks/redaction.py            # 2,000 rounds per shape
    .venv/bin/python benchmarks/redaction.py --quick    # 10 rounds (the test suite runs this)

For each message shape, in one run: ``rewrite_customer_to_principal`` (the relay's whole
rewrite: header allow-list, redaction of the customer's real address, serialisation) against
the floor, the standard library parsing the same bytes and writing them out again
(``parse_message`` + ``as_bytes``), which any rewrite must pay. The difference is what the
redaction adds. Shapes: the relay benchmark's 2 KB plain-text reply naming the address; a
30 KB HTML newsletter with no address (``@media`` rules and entities: the cheap test passes,
rendering runs); the same newsletter naming the address split by markup (rewritten); a reply
with a 200 KB PDF attached (the binary scan).
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
from collections.abc import Callable
from email.policy import SMTP

from rich.console import Console
from rich.table import Table

from mailveil.relay.parse import parse_message
from mailveil.relay.rewrite import rewrite_customer_to_principal

REAL = "Ada.Lovelace@private-mailbox.example"
ALIAS = "c-7f3a9k@relay.example"
HEAD = (
    f"From: Ada <{REAL}>\r\nTo: <shop-1@relay.example>\r\nSubject: Re: [shipping] parcel\r\n"
    "Date: Tue, 01 Oct 2024 10:00:00 +0200\r\nMessage-ID: <m1@client.example>\r\n"
    "MIME-Version: 1.0\r\n"
)


def _plain() -> bytes:
    body = ("The box arrived damaged, see the photos. " * 40)[:1800]
    text = f"{body}\r\n\r\nAda <{REAL}>\r\n"
    return (HEAD + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text).encode()


def _newsletter(address: str) -> bytes:
    rows = "".join(
        f"<tr><td style='padding:4px'><p>Item {i} &#8211; only &euro;{i}.99 "
        f"<a href='https://shop.example/p/{i}?utm=x%20y'>see</a></p></td></tr>\n"
        for i in range(150)
    )
    html = (
        "<!DOCTYPE html><html><head><style>@media (max-width:600px){.c{width:100%}}</style>"
        f"</head><body><table class=c>{rows}</table><p>{address}</p></body></html>"
    )
    return (HEAD + "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n").encode()


def _with_pdf() -> bytes:
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 800
    return (
        HEAD
        + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        + "Content-Type: text/plain\r\n\r\nphotos attached\r\n--b\r\n"
        + "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(pdf).decode()
        + "--b--\r\n"
    ).encode()


SHAPES: dict[str, bytes] = {
    "2 KB text naming the address": _plain(),
    "30 KB HTML, no address": _newsletter("Unsubscribe any time."),
    "30 KB HTML, address split by markup": _newsletter(
        "Ada.Lovelace<span></span>@private-mailbox<wbr>.example"
    ),
    "text + 200 KB PDF": _with_pdf(),
}


def _floor(raw: bytes) -> None:
    parse_message(raw).as_bytes(policy=SMTP)


def _rewrite(raw: bytes) -> None:
    rewrite_customer_to_principal(
        parse_message(raw),
        customer_alias=ALIAS,
        redactions={REAL.lower(): ALIAS},
        relay_domain="relay.example",
    )


def _time(fn: Callable[[bytes], None], raw: bytes, rounds: int) -> float:
    """Median CPU microseconds per call over ``rounds`` calls (after a warm-up). CPU time, not
    wall time: on a shared machine the wall clock also counts waiting for a core."""
    for _ in range(max(3, rounds // 20)):
        fn(raw)
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        fn(raw)
        samples.append(time.process_time() - start)
    return statistics.median(samples) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="10 rounds per shape")
    args = parser.parse_args()
    rounds = 10 if args.quick else args.rounds
    table = Table(title=f"redaction per message (median CPU time of {rounds:,} rounds)")
    for column in ("message", "size", "floor: parse + write, µs", "rewrite, µs", "added, µs"):
        table.add_column(column, justify="right" if column != "message" else "left")
    for name, raw in SHAPES.items():
        floor = _time(_floor, raw, rounds)
        full = _time(_rewrite, raw, rounds)
        table.add_row(
            name, f"{len(raw):,} B", f"{floor:,.0f}", f"{full:,.0f}", f"{full - floor:,.0f}"
        )
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
