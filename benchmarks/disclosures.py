"""Bulk disclosures with policy, alias minting and ledger, beside a plain SQLite insert.

    .venv/bin/python benchmarks/disclosures.py            # 1,000,000 pairs
    .venv/bin/python benchmarks/disclosures.py --n 20000  # quick run

Set-up (untimed): a temporary SQLite file with n/10 customers (through the real import path),
up to 1,000 sellers and, per customer, 10 sellers: 9 with an order in the contact window, the
10th with an order older than the window or none (those are denials, also ledgered).

Timed: ``disclose_bulk`` over every pair (facts, Cedar with memoised decisions, alias minting,
one ledger append and one commit per batch). Beside it, in the same run: ``sqlite3``
``executemany`` of as many rows into an identical ``aliases`` table in another SQLite file
(same pragmas, same batches, one commit each); the rows are generated outside the timing.

Memory: peak RSS is reset (``/proc/self/clear_refs``) before the timed phase and RSS is
sampled as it runs; flat RSS from 10 % to 100 % of the pairs shows memory is bounded by the
batch size, not by n.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from rich.table import Table
from sqlalchemy import Table as SATable
from sqlalchemy import event, insert, select
from sqlalchemy.orm import Session

from _memory import reset_peak_rss, rss_mib
from mailveil.config import Settings, load_settings
from mailveil.contacts import disclosures as disclosures_module
from mailveil.contacts.aliases import mint_pairs
from mailveil.contacts.customers import import_customers
from mailveil.contacts.disclosures import DisclosureRequest, disclose_bulk
from mailveil.contacts.models import Customer, Order, Principal
from mailveil.db.base import utcnow
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory
from mailveil.ledger import append as ledger_append_module
from mailveil.ledger.append import Ledger
from mailveil.ledger.signing import CheckpointSigner
from mailveil.policy import PolicyEngine
from mailveil.vault import Vault, init_keys

PAIRS_PER_CUSTOMER = 10
SEED = 7


class Stopwatch:
    """Time spent inside a few batch-level functions (one call per batch: no skew)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        self.seconds[name] = 0.0

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return timed


def setup(session: Session, settings: Settings, vault: Vault, n: int, console: Console) -> None:
    customers = max(1, n // PAIRS_PER_CUSTOMER)
    sellers = max(PAIRS_PER_CUSTOMER, min(1000, customers))
    pick = random.Random(SEED)  # which sellers each customer ordered from; pairs() replays it
    rng = random.Random(SEED + 1)
    countries = ["FR", "DE", "GB", "ES", "IT", "NL", "PL", "SE"]
    opt_choices: list[list[str]] = [[], [], [], ["marketing"], ["seller_unsolicited"]]

    def records() -> Iterator[tuple[int, dict[str, Any]]]:
        for i in range(customers):
            yield (
                i + 1,
                {
                    "external_id": f"cust-{i}",
                    "email": f"customer.{i}@example.com",
                    "country": countries[i % len(countries)],
                    "opt_outs": opt_choices[i % len(opt_choices)],
                    "is_canary": i % 997 == 0,
                },
            )

    t0 = time.perf_counter()
    bad = sum(
        o.status != "created" for o in import_customers(session, vault, records(), batch_size=5000)
    )
    assert bad == 0, f"{bad} customers failed to import"
    session.execute(
        insert(cast(SATable, Principal.__table__)),
        [
            {
                "kind": "seller",
                "external_id": f"seller-{s}",
                "display_name": f"Seller {s} Ltd",
                "status": "active",
                "attributes": {"sending_addresses": [], "sending_domains": []},
                "created_at": utcnow(),
                "updated_at": utcnow(),
            }
            for s in range(sellers)
        ],
    )
    session.commit()
    seller_ids = list(session.scalars(select(Principal.id).order_by(Principal.id)))
    customer_ids = list(session.scalars(select(Customer.id).order_by(Customer.id)))
    now = utcnow()
    window = settings.seller_contact_window_days
    orders: list[dict[str, Any]] = []
    order_no = 0
    table = cast(SATable, Order.__table__)
    for cid in customer_ids:
        for k, sid in enumerate(pick.sample(seller_ids, PAIRS_PER_CUSTOMER)):
            if k == PAIRS_PER_CUSTOMER - 1:
                if cid % 2:
                    continue  # no order at all: denied
                age = window + 30  # too old: denied
            else:
                age = rng.randrange(0, window)
            order_no += 1
            placed = now - timedelta(days=age, seconds=rng.randrange(86400))
            orders.append(
                {
                    "external_id": f"ord-{order_no}",
                    "customer_id": cid,
                    "seller_id": sid,
                    "status": "delivered",
                    "placed_at": placed,
                    "updated_at": placed,
                }
            )
        if len(orders) >= 50_000:
            session.execute(insert(table), orders)
            orders = []
    if orders:
        session.execute(insert(table), orders)
    session.commit()
    console.print(
        f"set-up: {customers:,} customers, {len(seller_ids):,} sellers, {order_no:,} orders "
        f"in {time.perf_counter() - t0:.1f} s (untimed)"
    )


def pairs(session: Session) -> Iterator[DisclosureRequest]:
    """Every customer with its 10 sellers, streamed in the order set-up drew them (the same
    seeded draws, so producing the input costs next to nothing inside the timing)."""
    pick = random.Random(SEED)
    seller_ids = list(session.scalars(select(Principal.id).order_by(Principal.id)))
    last = 0
    while True:
        rows = list(
            session.scalars(
                select(Customer.id).where(Customer.id > last).order_by(Customer.id).limit(10_000)
            )
        )
        session.rollback()  # end the read transaction so SQLite can checkpoint its WAL
        if not rows:
            return
        for cid in rows:
            ref = f"ord-for-{cid}"
            for sid in pick.sample(seller_ids, PAIRS_PER_CUSTOMER):
                yield DisclosureRequest(cid, sid, "order", ref)
        last = rows[-1]


def plain_insert(path: Path, settings: Settings, n: int, batch: int, pragmas: list[str]) -> float:
    """Seconds spent in executemany + commit for n alias rows (generation not timed)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for pragma in pragmas:
        conn.execute(f"PRAGMA {pragma}")
    conn.execute(
        "CREATE TABLE aliases (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, "
        "principal_id INTEGER NOT NULL, address VARCHAR(320) NOT NULL UNIQUE, "
        "reverse_address VARCHAR(320) NOT NULL UNIQUE, created_at DATETIME NOT NULL, "
        "revoked_at DATETIME, revoked_reason VARCHAR(500), revoked_by VARCHAR(255), "
        "UNIQUE (customer_id, principal_id))"
    )
    conn.execute("CREATE INDEX ix_aliases_principal_id ON aliases (principal_id)")
    spent = 0.0
    done = 0
    now = utcnow().replace(tzinfo=None).isoformat(" ")
    while done < n:
        size = min(batch, n - done)
        minted = mint_pairs(settings, ["Seller Ltd"] * size)
        rows = [
            (1 + (done + i) // PAIRS_PER_CUSTOMER, (done + i) % 1000, a, r, now)
            for i, (a, r) in enumerate(minted)
        ]
        t = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO aliases (customer_id, principal_id, address, reverse_address, "
            "created_at) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
        spent += time.perf_counter() - t
        done += size
    conn.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="pairs to disclose")
    parser.add_argument("--batch", type=int, default=5000, help="requests per batch")
    parser.add_argument(
        "--pragma",
        action="append",
        default=[],
        help="extra SQLite pragma for both sides, e.g. cache_size=-262144 (repeatable; "
        "default: the product's pragmas only)",
    )
    args = parser.parse_args()
    console = Console(width=110)
    with tempfile.TemporaryDirectory(prefix="mailveil-bench-") as tmp:
        settings = load_settings(env={}, data_dir=Path(tmp) / "var")
        init_keys(settings)
        vault = Vault.open(settings)
        policy = PolicyEngine.load(settings)
        ledger = Ledger(settings, CheckpointSigner.generate("bench"))
        engine = make_engine(settings)
        if args.pragma:

            def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
                for pragma in args.pragma:
                    dbapi_connection.execute(f"PRAGMA {pragma}")

            event.listen(engine, "connect", set_pragmas)
        upgrade(engine)
        factory = make_session_factory(engine)
        with factory() as session:
            setup(session, settings, vault, args.n, console)
        total = max(1, args.n // PAIRS_PER_CUSTOMER) * PAIRS_PER_CUSTOMER

        watch = Stopwatch()
        # Module globals are looked up per call, so these wrappers see every batch.
        # Ledger.append calls the ledger module's append, looked up per call like these.
        for module, attr, label in (
            (ledger_append_module, "append", "ledger append"),
            (disclosures_module, "mint_aliases", "alias minting"),
        ):
            setattr(module, attr, watch.wrap(label, getattr(module, attr)))
        with factory() as session, factory() as reader:
            session.commit = watch.wrap("commits", session.commit)  # type: ignore[method-assign]
            reset = reset_peak_rss()
            base_rss = rss_mib()
            samples: list[tuple[int, float]] = []
            counts = {"allowed": 0, "denied": 0, "error": 0}
            done = 0
            t0 = time.perf_counter()
            for result in disclose_bulk(
                session,
                settings=settings,
                policy=policy,
                ledger=ledger,
                requests=pairs(reader),
                actor="apikey:bench",
                batch_size=args.batch,
            ):
                counts[result.status] += 1
                done += 1
                if done % max(1, total // 10) == 0:
                    samples.append((done, rss_mib()))
            elapsed = time.perf_counter() - t0
            peak = rss_mib("VmHWM")
        plain = plain_insert(Path(tmp) / "plain.db", settings, done, args.batch, args.pragma)
        engine.dispose()

    rate = done / elapsed
    plain_rate = done / plain
    extra = f", PRAGMA {', '.join(args.pragma)}" if args.pragma else ""
    table = Table(
        title=f"Bulk disclosures, {done:,} pairs, batches of {args.batch:,}, SQLite{extra}"
    )
    table.add_column("measure")
    table.add_column("mailveil disclose_bulk", justify="right")
    table.add_column("plain sqlite3 executemany", justify="right")
    table.add_row("rows", f"{done:,}", f"{done:,}")
    table.add_row("seconds", f"{elapsed:.2f}", f"{plain:.2f}")
    table.add_row("rows/s", f"{rate:,.0f}", f"{plain_rate:,.0f}")
    table.add_row("ratio to plain insert", f"{rate / plain_rate:.1%}", "100%")
    table.add_row(
        "allowed / denied / error",
        f"{counts['allowed']:,} / {counts['denied']:,} / {counts['error']:,}",
        "-",
    )
    table.add_row("Cedar evaluations (memo misses)", f"{policy.misses:,}", "-")
    for name, seconds in watch.seconds.items():
        table.add_row(
            f"  of which {name}",
            f"{seconds:.2f} s ({seconds / elapsed:.0%}, {seconds / done * 1e6:.1f} µs/pair)",
            "-",
        )
    table.add_row("target", "≥ 50,000/s", "-")
    console.print(table)
    mem = Table(title="Memory during the timed phase (RSS, MiB)")
    mem.add_column("pairs done", justify="right")
    mem.add_column("RSS", justify="right")
    mem.add_row("0", f"{base_rss:.1f}")
    for at, value in samples:
        mem.add_row(f"{at:,}", f"{value:.1f}")
    mem.add_row("peak (VmHWM)" + ("" if reset else ", not reset"), f"{peak:.1f}")
    console.print(mem)
    verdict = "meets" if rate >= 50_000 else "misses"
    console.print(
        f"{rate:,.0f} disclosures/s {verdict} the 50,000/s target; "
        f"peak growth {peak - base_rss:+.1f} MiB over the starting RSS."
    )


if __name__ == "__main__":
    main()
