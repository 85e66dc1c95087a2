"""Leak detection quality: seeded marketplaces with injected leaks, run through the real code.

    .venv/bin/python benchmarks/leak_scenarios.py                  # 12 scenarios
    .venv/bin/python benchmarks/leak_scenarios.py --scenarios 30 --workers 2
    .venv/bin/python benchmarks/leak_scenarios.py --quick          # 2 small scenarios
    .venv/bin/python benchmarks/leak_scenarios.py --seeds 101-112  # the held-out seeds
    .venv/bin/python benchmarks/leak_scenarios.py --seeds 1-12,301-312 --keep DIR
    .venv/bin/python benchmarks/leak_scenarios.py --rescore DIR    # anomaly job only

Seeds: the anomaly job's features were tuned on ``TUNING_SEEDS`` (1-12 and 301-312) and
are reported on ``HELD_OUT_SEEDS`` (101-112), run once; every run prints which of its seeds
are which. ``--keep DIR`` saves each scenario's ledger (SQLite) and leak plan, and
``--rescore DIR`` runs only the anomaly job over them again, so features can be tried
without rebuilding the marketplaces.

Each scenario is a fresh SQLite marketplace (migrated schema, real vault, keys, Cedar
policies): customers imported through ``import_customers``, sellers, teams of employees with
managers, and seven weeks of normal life. Every day: orders (``create_order``) and their
seller disclosures (``disclose_batch``, as the API does), the sellers' mail to those aliases
(``message`` entries shaped as the relay writes them), support cases opened and assigned,
each employee's contact lookups for their cases (``disclose_batch`` with the employee as
actor, the call ``contact_for_employee`` makes, and ``enforce_limits``), some lists and exports
(``list_for_employee``, canaries planted by it), break-glass reveals (``request_reveal``,
``answer_reveal``, ``view_reveal``), and at night the detection scan (``scan_ledger``).

Time: the ledger stamps entries at append (``ledger.append.now_us``) and the areas stamp
rows with ``db.base.utcnow``; both are replaced by a simulated clock for the run (the
module attributes are patched, nothing in src/ changes), so months of history take seconds
and every entry carries the simulated time at which it happened. Orders and cases are the
marketplace backend's data: cases are bulk-inserted and closed after three days by one
UPDATE, as a backend sync would.

Injected leaks (every scenario has 2 and 3, plus one of 1, 4, 5 in rotation):

1. ``employee_export``: an employee takes on a few hundred cases in one day, exports the list
   (canaries included) and sells it to a seller, who mails the aliases;
2. ``seller_resale``: a seller sells its customers' aliases to a spammer;
3. ``reveal_resale``: an employee with approved reveals sells real addresses; the spammer's
   mail reaches real addresses, some customers report it (forwarded as message/rfc822, Gmail,
   Outlook and Apple inline forwards; through the API or the abuse mailbox) and guilt ranking
   (``submit_report`` -> ``rank_sender``) must name the employee;
4. ``slow_leak``: a few extra customers a day, without citing a case, for three to five weeks;
5. ``case_cover``: extra customers looked up citing the employee's own real cases.

Spam to an alias is a ``stranger_at_alias`` entry built by the relay's own ``stranger_event``.
Noise that must accuse nobody: background spam to random real addresses, reported; a
seller's newsletter to its own buyers, reported; seller mail claiming to be relayed (From: a
reverse alias, with no record of it) reported as spam by annoyed customers.

An adversary (``_leak_framing.py``) tries, in every scenario, to get innocent sellers
accused: forged senders and DKIM replays in the buyers' spam to leaked aliases, customers
replaying relayed mail to their own aliases or writing to them alone, complaints about
relayed mail in every report shape, forged spam to real addresses. ``--no-framing`` turns it
off.

The marketplace, its normal days, spam and reports are built in ``_leak_world.py``; the
leaks, the scenario loop and the figures are here.

Printed: culprit precision and recall, false accusations (and how many of them are the
adversary's targets), framing attempts by kind, rank of the true culprit in real-address
scenarios, detection delay, and anomaly recall of ``run_anomaly_job`` at a fixed alert budget
per 1,000 employee-days, with verdicts against the targets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select
from sqlalchemy.orm import Session

import _leak_framing as framing
from _leak_report import (
    MIN_REPORTS,
    anomalies,
    parse_seeds,
    seed_split,
    summarise,
)
from _leak_world import (
    CLOCK,
    SHIFT,
    Leak,
    World,
    _lookups,
    _open_cases,
    _region_customers,
    _reveal,
    build_world,
    normal_day,
    report,
    spam_message,
    strangers,
)
from mailveil.access.listing import list_for_employee
from mailveil.config import load_settings
from mailveil.contacts.models import Alias, Principal
from mailveil.db.session import make_engine
from mailveil.detect.models import AbuseReport, IncidentCulprit, Signal
from mailveil.detect.ranking import rank_principals
from mailveil.detect.scan import scan_ledger

ROTATING = ("employee_export", "slow_leak", "case_cover")


# --- leaks -------------------------------------------------------------------------------


@dataclass
class Plan:
    leaks: list[Leak]
    todo: dict[int, list[tuple[Any, ...]]] = field(default_factory=lambda: defaultdict(list))
    reported: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    last_day: int = 0


def plan(w: World, days: int, rotating: str) -> Plan:
    rng, seed = w.rng, w.seed
    agents = [e for e in w.employees if e not in w.approvers.values()]
    culprits = [int(e) for e in rng.choice(agents, 2, replace=False)]
    seller = w.sellers[int(rng.integers(2, 8))]
    leaks = [
        Leak("seller_resale", seller, None, int(rng.integers(21, 32)), 0, f"cheap{seed}.example"),
        Leak(
            "reveal_resale", culprits[0], None, int(rng.integers(21, 28)), 0, f"promo{seed}.example"
        ),
    ]
    start = int(rng.integers(21, 28))
    length = {
        "employee_export": 1,
        "slow_leak": int(rng.integers(21, 29)),
        "case_cover": int(rng.integers(10, 16)),
    }
    leaks.append(
        Leak(
            rotating,
            culprits[1],
            w.shady,
            start,
            start + length[rotating] - 1,
            f"bulk{seed}.example",
        )
    )
    return Plan(leaks)


def _sell(p: Plan, w: World, leak: Leak, aliases: list[str], day: int) -> None:
    """The buyer mails 60 % of what it bought, starting one to five days later."""
    if not aliases:
        return
    picked = [a for a in aliases if w.rng.random() < 0.6] or aliases[:1]
    first = min(p.last_day, day + int(w.rng.integers(1, 6)))  # mailed before the run ends
    half = len(picked) // 2
    p.todo[first].append(("strangers", picked[:half] or picked, leak.domain))
    if picked[half:] and half:
        p.todo[min(p.last_day, first + 1)].append(("strangers", picked[half:], leak.domain))


def _grab(s: Session, w: World, emp: int, k: int) -> list[tuple[int, str]]:
    return _open_cases(s, w, emp, _region_customers(w, w.emp_region[emp], k))


def leak_day(s: Session, w: World, p: Plan, day: int, last_day: int) -> None:
    rng = w.rng
    p.last_day = last_day
    weekday = day % 7 < 5
    for leak in p.leaks:
        if day < leak.start or (leak.end and day > leak.end and leak.kind != "reveal_resale"):
            continue
        emp = leak.culprit
        if leak.kind == "seller_resale" and day == leak.start:
            leak.end = day
            leak.aliases = list(s.scalars(select(Alias.address).where(Alias.principal_id == emp)))
            _sell(p, w, leak, leak.aliases, day)
        elif leak.kind == "employee_export" and day == leak.start:
            CLOCK.set(day, SHIFT[w.emp_region[emp]] + 7.5)
            _grab(s, w, emp, int(rng.integers(120, 350)))
            out = list_for_employee(
                s,
                settings=w.settings,
                policy=w.policy,
                ledger=w.ledger,
                vault=w.vault,
                employee_id=emp,
                limit=1000,
                export=True,
            )
            leak.aliases = [r.alias for r in out.rows]
            _sell(p, w, leak, leak.aliases, day)
        elif leak.kind in ("slow_leak", "case_cover") and weekday:
            CLOCK.set(day, SHIFT[w.emp_region[emp]] + 3 + rng.random() * 4)
            if leak.kind == "slow_leak":
                k = max(2, int(rng.poisson(0.4 * w.emp_rate[emp])))
                pairs: list[tuple[int, str | None]] = [(c, None) for c, _ in _grab(s, w, emp, k)]
            else:
                own = [ext for _, ext in w.open_cases.get(emp, [])[-12:]] or [None]
                k = int(rng.integers(15, 36))
                pairs = [(c, str(rng.choice(own))) for c, _ in _grab(s, w, emp, k)]
            got = _lookups(s, w, emp, pairs)
            leak.aliases.extend(got)
            leak.unsold.extend(got)
            following = day + 1 if (day + 1) % 7 < 5 else day + 7 - day % 7
            if day % 7 == 4 or following > leak.end:  # sold every Friday and at the end
                _sell(p, w, leak, leak.unsold, day)
                leak.unsold = []
        elif leak.kind == "reveal_resale" and not leak.end and weekday:
            target = int(np.random.default_rng(w.seed).integers(45, 80))
            CLOCK.set(day, SHIFT[w.emp_region[emp]] + 2 + rng.random() * 5)
            for c, ext in _grab(s, w, emp, int(rng.integers(2, 6))):
                _lookups(s, w, emp, [(c, ext)])
                _reveal(s, w, emp, c, ext)
                leak.customers.append(c)
            if len(leak.customers) >= target or day >= last_day - 12:
                leak.end = day
                _spam_real(p, w, leak, day, last_day)
    for item in p.todo.pop(day, []):
        CLOCK.set(day, 12 + rng.random() * 8)
        if item[0] == "strangers":
            strangers(s, w, item[1], item[2])
        else:
            _, key, customer, spam, leak = item
            n = len(p.reported[key])
            outcome = report(s, w, customer, spam, n)
            p.reported[key].append(customer)
            if leak is not None:
                _track(s, w, leak, outcome, p.reported[key], day)


def _spam_real(
    p: Plan,
    w: World,
    leak: Leak | None,
    day: int,
    last_day: int,
    recipients: list[int] | None = None,
    sender: str = "",
    key: str = "",
) -> None:
    """Spam to real addresses; each recipient reports with some probability, later."""
    rng = w.rng
    if leak is not None:
        extra = int(len(leak.customers) * rng.uniform(0.0, 0.3))  # bought elsewhere too
        recipients = leak.customers + [int(c) for c in rng.choice(w.customers, extra)]
        sender, key, p_report = f"offers@{leak.domain}", leak.domain, rng.uniform(0.45, 0.7)
    else:
        p_report = 1.0
    assert recipients is not None
    sent = day + int(rng.integers(2, 5))
    for n, c in enumerate(dict.fromkeys(recipients)):
        if rng.random() < p_report:
            when = min(last_day, sent + int(rng.geometric(0.35)) - 1)
            msg = spam_message(w.emails[c], sender, "Catalogue Deals", sent, n)
            p.todo[when].append(("report", key, c, msg, leak))


def _track(s: Session, w: World, leak: Leak, outcome: Any, reporters: list[int], day: int) -> None:
    if outcome.outcome != "real_address":
        return
    leak.reports += 1
    if leak.named_after_reports is None and outcome.signal_id is not None:
        sig = s.get(Signal, outcome.signal_id)
        if sig is not None and sig.source_principal_id == leak.culprit:
            leak.named_after_reports, leak.named_day = leak.reports, day - leak.start
    if leak.reports == MIN_REPORTS:
        ids = list(
            s.scalars(
                select(AbuseReport.reporter_customer_id).where(
                    AbuseReport.sender_domain == leak.domain, AbuseReport.outcome == "real_address"
                )
            )
        )
        ranking = rank_principals(s, [i for i in ids if i is not None], top=50)
        order = [r.principal_id for r in ranking.ranked]
        leak.rank_at_20 = order.index(leak.culprit) + 1 if leak.culprit in order else 99


def noise(s: Session, w: World, p: Plan, days: int) -> None:
    """Reports that must accuse nobody (see the module docstring)."""
    rng = w.rng
    # Background spam from a stranger to random customers' real addresses.
    _spam_real(
        p,
        w,
        None,
        int(rng.integers(20, 35)),
        days - 1,
        [int(c) for c in rng.choice(w.customers, 12, replace=False)],
        f"win@lottery{w.seed}.example",
        "lottery",
    )
    # A seller's newsletter to its own buyers (addresses it had before the marketplace).
    newsletter = w.sellers[2]
    own = list(
        dict.fromkeys(s.scalars(select(Alias.customer_id).where(Alias.principal_id == newsletter)))
    )
    _spam_real(
        p,
        w,
        None,
        int(rng.integers(25, 35)),
        days - 1,
        own[:10],
        "news@shop2.example",
        "newsletter",
    )


def relayed_complaints(s: Session, w: World, p: Plan, day: int) -> None:
    """Customers report a seller's ordinary relayed mail (From: its reverse alias) as spam."""
    seller = w.sellers[0]
    rows = s.execute(
        select(Alias.customer_id, Alias.reverse_address)
        .where(Alias.principal_id == seller)
        .limit(15)
    ).all()
    for n, (c, reverse) in enumerate(rows):
        msg = spam_message(w.emails[c], reverse, "Shop 0", day, n)
        p.todo[day + 1 + n % 5].append(("report", "relayed", c, msg, None))


# --- one scenario ---------------------------------------------------------------------------


def run_scenario(seed: int, size: dict[str, int], keep: str | None = None) -> dict[str, Any]:
    CLOCK.install()
    days = size["days"]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mailveil-leaks-") as tmp:
        w = build_world(seed, Path(tmp), size["customers"], size["sellers"], size["employees"])
        p = plan(w, days, ROTATING[seed % len(ROTATING)])
        guilty = {lk.culprit for lk in p.leaks} | {lk.buyer for lk in p.leaks if lk.buyer}
        framer = framing.build(w, guilty) if size.get("framing", 1) else None
        named_day: dict[int, int] = {}
        with Session(w.engine) as s:
            for day in range(days):
                normal_day(s, w, day)
                if day == 18:
                    noise(s, w, p, days)
                    relayed_complaints(s, w, p, 30)
                leak_day(s, w, p, day, days - 1)
                if framer is not None:
                    leaked = [a for lk in p.leaks for a in lk.aliases]
                    framing.act(s, framer, day, days, leaked)
                CLOCK.set(day, 23.5)
                scan_ledger(s, w.ledger)
                for (src,) in s.execute(select(Signal.source_principal_id).distinct()):
                    if src is not None:
                        named_day.setdefault(int(src), day)
                s.commit()
            result = _collect(s, w, p, named_day)
        result["framing"] = framer.summary() if framer is not None else None
        framed = set(framer.innocent) if framer is not None else set()
        result["framed_named"] = sorted(
            framed & (set(result["false_sources"]) | set(result["false_recipients"]))
        )
        result["anomaly"] = anomalies(w.engine, w.settings, p.leaks, days)
        w.engine.dispose()
        if keep is not None:
            kept = {k: v for k, v in result.items() if k != "anomaly"}
            _keep(Path(keep), Path(tmp), seed, days, p.leaks, kept)
    result["seconds"] = time.perf_counter() - t0
    result["seed"] = seed
    return result


def _collect(s: Session, w: World, p: Plan, named_day: dict[int, int]) -> dict[str, Any]:
    guilty_src = {lk.culprit for lk in p.leaks}
    guilty_rcpt = {lk.buyer for lk in p.leaks if lk.buyer is not None}
    sources: set[int] = set()
    recipients: set[int] = set()
    exact: set[int] = set()
    for src, rcpt, conf in s.execute(
        select(Signal.source_principal_id, Signal.recipient_principal_id, Signal.confidence)
    ):
        if src is not None:
            sources.add(int(src))
            if conf == "exact":
                exact.add(int(src))
        if rcpt is not None:
            recipients.add(int(rcpt))
    for pid, role in s.execute(select(IncidentCulprit.principal_id, IncidentCulprit.role)):
        (sources if role == "source" else recipients).add(int(pid))
    leaks = []
    for lk in p.leaks:
        d = named_day.get(lk.culprit)
        leaks.append(
            {
                "kind": lk.kind,
                "culprit": lk.culprit,
                "alias_based": lk.kind != "reveal_resale",
                "exact": lk.culprit in exact,
                "named": lk.culprit in sources,
                "delay_days": (d - lk.start) if d is not None else None,
                "reports": lk.reports,
                "named_after_reports": lk.named_after_reports,
                "rank_at_20": lk.rank_at_20,
                "sold": len(lk.aliases) or len(lk.customers),
            }
        )
    false_detail = [
        f"{kind}/{conf} {ev.get('sender_domain', '')}: {summary}"
        for kind, conf, summary, ev in s.execute(
            select(Signal.kind, Signal.confidence, Signal.summary, Signal.evidence).where(
                Signal.source_principal_id.in_(sorted(sources - guilty_src) or [-1])
            )
        )
    ]
    outcomes: dict[str, int] = defaultdict(int)
    for (o,) in s.execute(select(AbuseReport.outcome)):
        outcomes[o] += 1
    return {
        "leaks": leaks,
        "true_sources": len(sources & guilty_src),
        "false_sources": sorted(sources - guilty_src),
        "accused_sources": len(sources),
        "guilty_sources": len(guilty_src),
        "false_recipients": sorted(recipients - guilty_rcpt),
        "report_outcomes": dict(outcomes),
        "false_detail": false_detail[:5],
        "noise_reports": {k: len(v) for k, v in p.reported.items()},
    }


def _keep(
    keep: Path, tmp: Path, seed: int, days: int, leaks: list[Leak], result: dict[str, Any]
) -> None:
    """The scenario's ledger, leak plan and attribution figures, for ``--rescore``."""
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp / "mailveil.db", keep / f"seed-{seed}.db")
    plan_ = [
        {"kind": lk.kind, "culprit": lk.culprit, "start": lk.start, "end": lk.end} for lk in leaks
    ]
    meta = {"seed": seed, "days": days, "leaks": plan_, "result": result}
    (keep / f"seed-{seed}.json").write_text(json.dumps(meta, default=str))


def _rescore_one(path: str) -> dict[str, Any]:
    meta = json.loads(Path(path).read_text())
    leaks = [Leak(x["kind"], x["culprit"], None, x["start"], x["end"], "") for x in meta["leaks"]]
    engine = make_engine(url=f"sqlite:///{Path(path).with_suffix('.db')}")
    with tempfile.TemporaryDirectory(prefix="mailveil-rescore-") as tmp:
        settings = load_settings(env={}, data_dir=Path(tmp), relay_domain="relay.shop.example")
        try:
            result = dict(meta.get("result") or _attribution_after(engine, leaks))
            result["anomaly"] = anomalies(engine, settings, leaks, meta["days"])
            result["seed"] = meta["seed"]
            return result
        finally:
            engine.dispose()


def _attribution_after(engine: Any, leaks: list[Leak]) -> dict[str, Any]:
    """Attribution figures from a ledger kept without them: what the database says (who was
    named, how exactly); report counts, ranks, delays and the adversary's attempts were
    only in the run's memory (``post_hoc`` marks them missing)."""
    with Session(engine) as s:
        shady = s.scalar(
            select(Principal.id).where(
                Principal.kind == "seller", Principal.external_id == "s-bulk"
            )
        )
        for lk in leaks:
            lk.buyer = shady if lk.kind in ROTATING else None
        result = _collect(s, None, Plan(leaks), {})  # type: ignore[arg-type]
    result["framing"] = None
    result["framed_named"] = []
    result["post_hoc"] = True
    return result


# --- the report ---------------------------------------------------------------------------


def rescore(console: Console, folder: Path, seeds: list[int] | None, workers: int) -> int:
    """The anomaly job again over ledgers kept by ``--keep``."""
    paths = sorted(folder.glob("seed-*.json"), key=lambda q: int(q.stem.split("-")[1]))
    if seeds is not None:
        paths = [q for q in paths if int(q.stem.split("-")[1]) in seeds]
    if not paths:
        console.print(f"no kept scenarios in {folder}")
        return 1
    console.print(seed_split([int(q.stem.split("-")[1]) for q in paths]))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_rescore_one, [str(q) for q in paths]))
    else:
        results = [_rescore_one(str(q)) for q in paths]
    if any(r.get("post_hoc") for r in results):
        console.print(
            "  kept without figures: attribution recounted from the database (report counts, "
            "ranks, delays and framing attempts were not kept: ignore those rows)"
        )
    summarise(console, results)
    for r in results:
        missed = [
            k
            for k, v in r["anomaly"].get("budgets", {}).get(1.0, {}).get("found", {}).items()
            if v is None
        ]
        if missed:
            console.print(f"  seed {r['seed']}: missed at 1/1000: {missed}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1, help="first seed")
    parser.add_argument(
        "--seeds", type=parse_seeds, default=None, help="seeds to run, e.g. 101-112 or 1-12,301-312"
    )
    parser.add_argument("--keep", default=None, help="save each scenario's ledger here")
    parser.add_argument("--rescore", default=None, help="rerun the anomaly job on kept ledgers")
    parser.add_argument("--days", type=int, default=49)
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--sellers", type=int, default=30)
    parser.add_argument("--employees", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 small scenarios (smoke run)")
    parser.add_argument(
        "--no-framing", action="store_true", help="without the adversary (_leak_framing.py)"
    )
    args, _unknown = parser.parse_known_args()  # run_all passes other benchmarks' flags too
    if args.quick:
        args.scenarios, args.employees, args.customers, args.days = 2, 40, 1200, 42
    size = {k: getattr(args, k) for k in ("days", "customers", "sellers", "employees")}
    size["framing"] = 0 if args.no_framing else 1
    console = Console()
    if args.rescore:
        return rescore(console, Path(args.rescore), args.seeds, args.workers)
    seeds = args.seeds or list(range(args.seed, args.seed + args.scenarios))
    console.print(
        f"{len(seeds)} scenarios: {args.customers:,} customers, "
        f"{args.sellers} sellers, {args.employees} employees, {args.days} days each"
    )
    console.print(seed_split(seeds))
    results: list[dict[str, Any]] = []
    t = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("scenarios", total=len(seeds))
        if args.workers > 1:
            with ProcessPoolExecutor(args.workers) as pool:
                futures = [pool.submit(run_scenario, seed, size, args.keep) for seed in seeds]
                for future in as_completed(futures):
                    results.append(future.result())
                    progress.advance(task)
        else:
            for seed in seeds:
                results.append(run_scenario(seed, size, args.keep))
                progress.advance(task)
    results.sort(key=lambda r: r["seed"])
    console.print(
        f"  {time.perf_counter() - t:.0f} s wall, "
        f"{statistics.mean(r['seconds'] for r in results):.0f} s per scenario"
    )
    summarise(console, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
