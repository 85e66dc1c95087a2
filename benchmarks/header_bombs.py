"""CPU per hostile message: the relay's pre-scan beside the unguarded stdlib parser (issue 12).

    .venv/bin/python benchmarks/header_bombs.py           # bombs up to 2,000 parameters
    .venv/bin/python benchmarks/header_bombs.py --quick   # small sizes (the suite runs this)

Each shape (``tests/relay/hostile_mail.py``) at growing sizes, in one run:

- *unguarded*: what the relay did before the pre-scan with a message it could not refuse on
  size alone: ``BytesParser(policy=default)`` and the rewrite a message to a customer goes
  through (``rewrite_customer_to_principal``, which reads Content-Type again and again);
  the RFC 2231 bomb is quadratic here, nesting costs depth x lines;
- *pre-scan*: what DATA costs now (``relay.prescan.refusal_for``), which refuses the message
  with its named reply before any parser runs.

Figures are CPU seconds per message (``time.process_time``, the median of ``--rounds``) and
the pre-scan's cost per KiB, which stays flat as the shape grows (linear, small constant).
The bar: the pre-scan refuses every bomb in under 50 ms, and a message at the limits costs
the unguarded path no more than 0.5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import default
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "relay"))
from hostile_mail import (
    encoded_words,
    head,
    nested_multiparts,
    params_over_parts,
    part_flood,
    received_chain,
    rfc2231_content_type,
)

from mailveil.relay.errors import RelayRefusal
from mailveil.relay.prescan import refusal_for
from mailveil.relay.rewrite import rewrite_customer_to_principal

REAL = "ada@private-mailbox.example"
HEAD = head(f"Ada <{REAL}>", "shop-1@relay.example")


def deep(levels: int) -> bytes:
    """``levels`` multiparts around a 2,000-line text: the parser checks each line against
    every open boundary."""
    leaf = b"Content-Type: text/plain\r\n\r\n" + b"a line of text\r\n" * 2000
    return nested_multiparts(levels).replace(
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\nleaf\r\n", leaf
    )


def unguarded(raw: bytes) -> None:
    message = BytesParser(policy=default).parsebytes(raw)
    # Refused after the work was done, or not: the work is what is measured.
    with contextlib.suppress(RelayRefusal, RecursionError):
        rewrite_customer_to_principal(
            message,  # type: ignore[arg-type]
            customer_alias="c-1@relay.example",
            redactions={REAL: "c-1@relay.example"},
            relay_domain="relay.example",
        )


def prescan(raw: bytes) -> None:
    refusal_for(raw)


def cpu(fn: Callable[[bytes], None], raw: bytes, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        fn(raw)
        samples.append(time.process_time() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    sizes = (1, 2) if args.quick else (1, 2, 4, 8)
    shapes: list[tuple[str, Callable[[int], bytes]]] = [
        ("RFC 2231 parameters", lambda k: rfc2231_content_type(250 * k)),
        ("MIME parameters over 10 parts", lambda k: params_over_parts(10, 60 * k)),
        ("encoded-words", lambda k: encoded_words(1000 * k)),
        ("Received fields", lambda k: received_chain(200 * k)),
        ("multipart levels", lambda k: deep(25 * k)),
        ("parts", lambda k: part_flood(1000 * k)),
    ]
    table = Table(title=f"CPU per hostile message (median of {rounds})")
    for column in ("shape", "count", "size", "unguarded, s", "pre-scan, ms", "µs/KiB", "reply"):
        table.add_column(column, justify="left" if column in ("shape", "reply") else "right")
    worst_scan, failures = 0.0, []
    for name, build in shapes:
        for k in sizes:
            raw = HEAD + build(k)
            before = cpu(unguarded, raw, rounds)
            after = cpu(prescan, raw, rounds)
            reply = refusal_for(raw)
            worst_scan = max(worst_scan, after)
            if reply is None:
                failures.append(f"{name} x{k} was not refused")
            table.add_row(
                name,
                f"x{k}",
                f"{len(raw) / 1024:,.0f} KiB",
                f"{before:.3f}",
                f"{after * 1000:.2f}",
                f"{after * 1e6 / (len(raw) / 1024):.1f}",
                str(reply) if reply else "accepted",
            )
    # At the limits (what still gets through to the parser): the worst the relay now pays.
    at_limits = {
        "100 parameters in one field": rfc2231_content_type(99),
        "500 MIME parameters over 10 parts": params_over_parts(10, 49),
        "256 encoded-words": encoded_words(256),
        "20 multipart levels, 2,000 lines": deep(20),
        "499 parts": part_flood(499),
    }
    worst_limit = 0.0
    for name, body in at_limits.items():
        raw = HEAD + body
        before = cpu(unguarded, raw, rounds)
        worst_limit = max(worst_limit, before)
        reply = refusal_for(raw)
        if reply is not None:
            failures.append(f"{name} was refused: {reply}")
        table.add_row(
            f"at the limit: {name}",
            "",
            f"{len(raw) / 1024:,.0f} KiB",
            f"{before:.3f}",
            f"{cpu(prescan, raw, rounds) * 1000:.2f}",
            "",
            "accepted" if reply is None else str(reply),
        )
    Console(width=140).print(table)
    print(
        f"worst pre-scan refusal: {worst_scan * 1000:.1f} ms CPU (bar: 50 ms); "
        f"worst message at the limits through the unguarded path: {worst_limit:.3f} s "
        "(bar: 0.5 s)"
    )
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
