"""The registry-glitch replay at scale: the gift template sent to every customer through the
real relay; it must halt at its first stage, reach nobody without a registry gift, and its
correction must go to exactly the delivered set.

    .venv/bin/python benchmarks/notify_glitch.py               # 1,000,000 customers, both DBs
    .venv/bin/python benchmarks/notify_glitch.py --n 100000    # quicker
    .venv/bin/python benchmarks/notify_glitch.py --db sqlite   # one database

Set-up (untimed), per database (SQLite under a temp dir; PostgreSQL in a private schema of
the tests' database, ``$MAILVEIL_TEST_PG_URL``, dropped at the end): the relay and an
aiosmtpd sink started as tests/notify/test_notify_glitch_replay.py starts them
(notify_kit.open_env); ``--n`` customers bulk-loaded with executemany (each address really
sealed by the vault, so the relay can deliver to anyone the worker wrongly picked;
``import_customers`` row by row would take far longer), 2 % of them with ``registry.created``
+ ``registry.gift_purchased`` facts, also bulk-inserted (``ingest_batch`` validates one fact
at a time).

Timed, through the library (``sends.preview``, ``create_send``, ``approve``,
``queue.run_to_end``, ``correction``): the preview, creating the send (every recipient
assessed and stored), the run until the send stops, and the correction. The peer is the
gate's own input: the share of the audience with a gift fact (one SQL count, same run).
Each database gets its own section; the last table puts both databases' targets side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, insert, select, text

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
sys.path[:0] = [str(TESTS / "notify"), str(TESTS)]  # notify_kit: the tests' relay + sink

import notify_kit as kit  # type: ignore[import-not-found]  # noqa: E402

from dbkit import PG_URL, private_pg_engine  # type: ignore[import-not-found]  # noqa: E402
from mailveil.config import Settings, load_settings  # noqa: E402
from mailveil.contacts.models import Alias, Customer  # noqa: E402
from mailveil.db.base import utcnow  # noqa: E402
from mailveil.db.migrate import upgrade  # noqa: E402
from mailveil.db.session import make_engine, make_session_factory  # noqa: E402
from mailveil.ledger.models import LedgerEntry  # noqa: E402
from mailveil.notify import sends  # noqa: E402
from mailveil.notify.audience import Entry  # noqa: E402
from mailveil.notify.feedback import unsubscribe_key, unsubscribe_url  # noqa: E402
from mailveil.notify.models import Fact, Recipient  # noqa: E402
from mailveil.notify.queue import run_to_end  # noqa: E402
from mailveil.notify.templates import register_template, render  # noqa: E402
from mailveil.notify.transmit import WIRE, Ready, build_message  # noqa: E402

BATCH = 20_000
EVERY = 50  # customers 1, 51, 101, ... have a registry with a gift: 2 %
CREATOR, APPROVER = "apikey:bench-creator", "apikey:bench-approver"
NUMBER = re.compile(r"^person\.(\d+)@")


DB_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


@dataclass
class World:
    env: Any  # notify_kit.NotifyEnv
    stop: Iterator[Any]
    n: int
    db: Path  # the SQLite file (unused on PostgreSQL)
    kind: str = "sqlite"
    close_db: Callable[[], None] | None = None


def open_world(work: Path, *, relay: bool = True, db: str = "sqlite", **overrides: Any) -> World:
    """A migrated database (a SQLite file, or a private PostgreSQL schema), the keys, the
    service principal, and (``relay``) the relay and the sink, as the notify tests build them."""
    settings: Settings = load_settings(
        env={}, data_dir=work / "var", log_json=False, log_level="error"
    )
    settings = kit.notify_settings(settings, notify_min_stage_size=100, **overrides)
    path = work / "notify.db"
    stack = contextlib.ExitStack()
    if db == "sqlite":
        engine = make_engine(url=f"sqlite:///{path}")
        stack.callback(engine.dispose)
    else:
        engine = stack.enter_context(private_pg_engine("mv_bench_notify"))
    try:
        upgrade(engine)
        gen = kit.open_env(settings, make_session_factory(engine), 0, relay=relay)
        env = next(gen)
    except BaseException:
        stack.close()
        raise
    return World(env, gen, 0, path, db, stack.close)


def close_world(world: World) -> None:
    with contextlib.suppress(StopIteration):
        next(world.stop)
    if world.close_db is not None:
        world.close_db()


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        choices=("both", "sqlite", "postgresql", "postgres"),
        default="both",
        help="the database(s) to run on, a section each (default both)",
    )


def peer_messages(env: Any, template: Any, send_id: int) -> list[tuple[str, bytes]]:
    """The same messages the workers sent (rendered, unsubscribe link, to the same aliases)."""
    settings = env.runtime.settings
    with env.session_factory() as s:
        send = sends.get_send(s, send_id)
        s.add(template)
        s.refresh(template)
        aliases = dict(
            s.execute(
                select(Alias.customer_id, Alias.address).where(Alias.principal_id == env.service.id)
            ).all()
        )
        key = unsubscribe_key(settings)
        out = []
        for cid in sorted(aliases):
            link = unsubscribe_url(settings, key, send_id, cid)
            context = {
                "customer": {"id": f"c{cid}"},
                "facts": {"gift": {"item": "a teddy bear", "registry_id": f"R{cid}"}},
                "send": {"id": send_id, "corrects": None},
                "unsubscribe_url": link,
            }
            subject, body = render(template, context)
            item = Ready(0, cid, aliases[cid], subject, body, [], link)
            out.append(
                (
                    aliases[cid],
                    build_message(env.runtime, send, template, item).as_bytes(policy=WIRE),
                )
            )
    return out


def pg_reachable(url: str = PG_URL) -> bool:
    try:
        import psycopg

        conninfo = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, connect_timeout=3):
            return True
    except Exception:  # any failure means: not here
        return False


def databases(choice: str, console: Console) -> list[str]:
    """The databases to run on; [] when the one asked for is unreachable. With ``both`` an
    unreachable PostgreSQL is said and skipped (a laptop without it still runs SQLite)."""
    choice = "postgresql" if choice == "postgres" else choice
    wanted = list(DB_NAMES) if choice == "both" else [choice]
    if "postgresql" in wanted and not pg_reachable():
        if choice == "postgresql":
            console.print(f"[red]PostgreSQL unreachable at {PG_URL}[/]")
            return []
        console.print(f"[yellow]PostgreSQL unreachable at {PG_URL}: SQLite only[/]")
        wanted.remove("postgresql")
    return wanted


Cell = tuple[str, bool | None]  # what was measured, and whether it meets its target (None: n/a)


def side_by_side(title: str, dbs: list[str], rows: list[tuple[str, dict[str, Cell]]]) -> Table:
    """The final table: one row a target, one column a database, the verdict in each cell."""
    table = Table(title=title)
    table.add_column("target")
    for name in dbs:
        table.add_column(DB_NAMES[name])
    for label, cells in rows:
        shown = []
        for name in dbs:
            measured, ok = cells.get(name, ("not run", None))
            shown.append(measured if ok is None else f"{measured} — {verdict(ok)}")
        table.add_row(label, *shown)
    return table


def load_customers(world: World, n: int, *, sealed: bool) -> float:
    """Customers 1..n (external id ``c<n>``, id n). ``sealed``: each address encrypted by
    the vault; else synthetic ciphertexts under the real data key (for work that never
    decrypts, e.g. a preview). Returns seconds taken."""
    t0 = time.perf_counter()
    env = world.env
    vault = env.runtime.vault
    now = utcnow()
    with env.session_factory() as s:
        probe = vault.seal(s, "probe@people.example", owner="probe")
        s.commit()
        if sealed:
            for lo in range(1, n + 1, BATCH):
                rows = []
                for i in range(lo, min(n, lo + BATCH - 1) + 1):
                    box = vault.seal(s, kit.address(i), owner=f"c{i}")
                    rows.append(
                        {
                            "id": i,
                            "external_id": f"c{i}",
                            "address_ct": box.ciphertext,
                            "address_dek": box.dek_id,
                            "address_bidx": box.blind_index,
                            "country": "DE",
                            "opt_outs": [],
                            "sensitive_topics": [],
                            "is_canary": False,
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
                s.execute(insert(Customer), rows)
                s.commit()
    if not sealed:
        stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
        conn = sqlite3.connect(world.db, isolation_level=None)
        conn.execute("PRAGMA synchronous=OFF")
        for lo in range(1, n + 1, 1_000_000):
            hi = min(n, lo + 999_999)
            conn.execute("BEGIN")
            conn.execute(
                """INSERT INTO customers (id, external_id, address_ct, address_dek,
                    address_bidx, country, opt_outs, sensitive_topics, is_canary, created_at,
                    updated_at)
                WITH RECURSIVE seq(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM seq
                                          WHERE i < :hi)
                SELECT i, 'c' || i, randomblob(60), :dek, randomblob(32), 'DE', '[]', '[]', 0,
                       :now, :now FROM seq""",
                {"lo": lo, "hi": hi, "dek": probe.dek_id, "now": stamp},
            )
            conn.execute("COMMIT")
        conn.close()
    world.n = n
    return time.perf_counter() - t0


def gifted(n: int) -> range:
    return range(1, n + 1, EVERY)


def load_facts(world: World, numbers: range) -> float:
    """A registry and a gift from it, a day ago, for each customer in ``numbers``."""
    t0 = time.perf_counter()
    at = utcnow() - timedelta(days=1)
    with world.env.session_factory() as s:
        rows: list[dict[str, Any]] = []
        for i in numbers:
            common = {"customer_id": i, "occurred_at": at, "created_at": at}
            rows.append({"fact_id": f"reg-{i}", "kind": "registry.created",
                         "attributes": {"registry_id": f"R{i}"}, **common})  # fmt: skip
            rows.append({"fact_id": f"gift-{i}", "kind": "registry.gift_purchased",
                         "attributes": {"registry_id": f"R{i}", "item": "a teddy bear"},
                         **common})  # fmt: skip
            if len(rows) >= BATCH:
                s.execute(insert(Fact), rows)
                rows = []
        if rows:
            s.execute(insert(Fact), rows)
        s.commit()
        if s.get_bind().dialect.name == "postgresql":  # as ingest_lines ends a large import
            s.execute(text("ANALYZE notify_facts"))
            s.commit()
    return time.perf_counter() - t0


def register_templates(world: World) -> tuple[Any, Any]:
    env = world.env
    with env.session_factory() as s:
        gift = register_template(s, env.settings, kit.GIFT_TEMPLATE, actor=CREATOR)
        sorry = register_template(s, env.settings, kit.SORRY_TEMPLATE, actor=CREATOR)
        s.commit()
        s.expunge_all()
    return gift, sorry


def everyone(n: int) -> Iterator[Entry]:
    """The glitch's audience: every customer, no fact named (the store is the evidence)."""
    for i in range(1, n + 1):
        yield Entry(f"c{i}", None)


def sink_numbers(env: Any) -> list[int]:
    out = []
    for rcpt in env.sink.recipients():
        found = NUMBER.match(rcpt)
        out.append(int(found.group(1)) if found else -1)
    return out


def verdict(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[red]no[/]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="customers")
    parser.add_argument("--no-preview", action="store_true", help="skip the timed preview")
    add_db_option(parser)
    args, _unknown = parser.parse_known_args()  # run_all passes other benchmarks' flags too
    console = Console(width=max(120, Console().width))
    dbs = databases(args.db, console)
    if not dbs:
        return 1
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    console.print(f"load average at the start: {load}; databases: {', '.join(dbs)}")
    results: dict[str, dict[str, Cell]] = {}
    for name in dbs:
        work = Path(tempfile.mkdtemp(prefix="mailveil-bench-glitch-"))
        world = open_world(work, db=name)
        try:
            results[name] = run(world, args, console)
        finally:
            close_world(world)
            shutil.rmtree(work, ignore_errors=True)
    rows = [(label, {db: results[db][label] for db in dbs}) for label in results[dbs[0]]]
    console.print(side_by_side(f"targets ({args.n:,} customers)", dbs, rows))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    console.print(f"load average at the end: {load}")
    return 0 if all(ok is not False for r in results.values() for _m, ok in r.values()) else 1


def run(world: World, args: argparse.Namespace, console: Console) -> dict[str, Cell]:
    """One database's replay, printed; returns its targets (label -> measured, met)."""
    env, n = world.env, args.n
    db = DB_NAMES[world.kind]
    numbers = gifted(n)
    t_cust = load_customers(world, n, sealed=True)
    t_facts = load_facts(world, numbers)
    gift, sorry = register_templates(world)
    console.print(
        f"[bold]{db}[/]: set-up (untimed): {n:,} customers with vault-sealed addresses in "
        f"{t_cust:.1f} s, "
        f"{2 * len(numbers):,} facts for {len(numbers):,} customers in {t_facts:.1f} s "
        "(executemany; the per-row import API would be far slower)"
    )
    settings = env.settings
    figures: list[tuple[str, str, str]] = []
    s = env.session()
    if not args.no_preview:
        t0 = time.perf_counter()
        shown = sends.preview(s, settings, gift, everyone(n))
        figures.append(("preview (dry run)", f"{time.perf_counter() - t0:.1f} s",
                        f"eligible {shown['counts']['eligible']:,}, would halt at first stage: "
                        f"{shown['would_halt_at_first_stage']}"))  # fmt: skip
    t0 = time.perf_counter()
    send = sends.create_send(
        s, settings, env.runtime.ledger, template=gift, entries=everyone(n), actor=CREATOR,
        commit=True,
    )  # fmt: skip
    s.commit()
    figures.append(("create the send", f"{time.perf_counter() - t0:.1f} s",
                    f"audience {send.audience:,}, eligible {send.eligible:,}, "
                    f"status {send.status}"))  # fmt: skip
    if send.status == "awaiting_approval":
        # Above the expected volume a second person approves; the stored assessment already
        # forecasts the halt, and the approval is refused unless the approver says they saw
        # it. The replay approves despite it, to measure the gate that halts the send.
        try:
            sends.approve(s, env.runtime.ledger, send.id, actor=APPROVER)
            approval = "approved (no halt forecast)"
        except sends.HaltForecast:
            s.rollback()
            sends.approve(s, env.runtime.ledger, send.id, actor=APPROVER, despite_forecast=True)
            approval = "refused on the halt forecast; approved despite it (the replay)"
        s.commit()
        figures.append(("approval (second person)", "-", approval))
    t0 = time.perf_counter()
    run_to_end(env.runtime, send.id, worker="bench-worker")
    env.flush()
    t_run = time.perf_counter() - t0
    s.expire_all()
    send = sends.get_send(s, send.id)
    counts = sends.counts_of(s, send.id)
    state = f"status {send.status} at stage {send.stage} ({send.halt_reason})"
    figures.append(("run until it stops", f"{t_run:.1f} s", state))
    delivered = sink_numbers(env)
    gift_set = set(numbers)
    ledgered = sorted(sends.delivered_customers(s, send))
    signals = s.scalar(
        select(func.count())
        .select_from(LedgerEntry)
        .where(LedgerEntry.kind == "signal", LedgerEntry.detail.contains('"send_gate_failed"'))
    )
    with_gift = (
        s.scalar(
            select(func.count(func.distinct(Fact.customer_id))).where(
                Fact.kind == "registry.gift_purchased"
            )
        )
        or 0
    )
    t0 = time.perf_counter()
    fix = sends.correction(
        s, settings, env.runtime.ledger, original_id=send.id, template_name=sorry.name,
        version=None, actor=CREATOR, commit=True,
    )  # fmt: skip
    s.commit()
    t_fix = time.perf_counter() - t0
    audience = sorted(
        s.scalars(
            select(Recipient.customer_id).where(
                Recipient.send_id == fix.id, Recipient.state == "pending"
            )
        )
    )
    figures.append(("correction (from the ledger)", f"{t_fix:.2f} s",
                    f"audience {len(audience):,}, status {fix.status}"))  # fmt: skip
    before = len(delivered)
    run_to_end(env.runtime, fix.id, worker="bench-worker")
    env.flush()
    again = sink_numbers(env)[before:]

    title = (
        f"{db}: registry-glitch replay: {n:,} customers, {len(numbers):,} "
        f"({len(numbers) / n:.1%}) with a registry gift, through the real relay"
    )
    table = Table(title=title)
    for column in ("phase", "time", "outcome"):
        table.add_column(column)
    for row in figures:
        table.add_row(*row)
    table.add_row("peer: share of the audience with a gift fact (SQL count)", "-",
                  f"{with_gift:,} of {n:,} = {with_gift / n:.2%}")  # fmt: skip
    console.print(table)
    outside = [x for x in delivered if x not in gift_set]
    console.print(
        f"mails out before the halt: {len(delivered):,} (sink); recipients by state: {counts}; "
        f"ledger send entries: {len(ledgered):,}; gate signals: {signals}; "
        f"delivered to customers with a registry gift: {len(delivered) - len(outside):,}, "
        f"without: {len(outside):,}; correction mails that reached the sink: {len(again):,}"
    )
    halted_first = send.status == "halted" and send.stage == 0
    equal = set(audience) == set(delivered) == set(ledgered) and len(audience) == len(delivered)
    out: dict[str, Cell] = {
        # Timed phases, no target: preview (unless --no-preview) / create / run / correction.
        "time: " + " / ".join(label.split(" ")[0] for label, t, _o in figures if t != "-"): (
            " / ".join(t for _l, t, _o in figures if t != "-"),
            None,
        ),
        "halt at the first stage": (f"{send.status}, stage {send.stage}", halted_first),
        "zero deliveries to customers without a registry gift": (f"{len(outside)}", not outside),
        "correction audience == delivered set": (
            f"{len(audience):,} vs {len(set(delivered)):,} (ledger {len(ledgered):,})",
            equal and sorted(again) == sorted(delivered),
        ),
    }
    targets = Table(title=f"{db}: targets")
    for column in ("target", "measured", "met"):
        targets.add_column(column)
    for label, (measured, ok) in out.items():
        if ok is not None:
            targets.add_row(label, measured, verdict(ok))
    console.print(targets)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
