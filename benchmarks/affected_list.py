"""The exact list of affected people with an inclusion proof per person, beside the bare
stream of the same people without proofs.

    .venv/bin/python benchmarks/affected_list.py            # 100,000 affected people
    .venv/bin/python benchmarks/affected_list.py --quick    # 2,000

A real mailveil SQLite file (schema from the migrations) in a temporary folder: one culprit
seller holding an alias of every customer, each alias's disclosure a real ledger entry
(appended through ``ledger.append``, so the Merkle tree and its stored subtrees are the
product's), plus as many entries about other people in between (the culprit's entries are
spread through a ledger twice their number), and the incident naming the seller.

Timed in one run on the same file: the peer, ``blast.exposures`` (every affected person
streamed, no proof: the floor an exact list costs), then ``proofs.write_affected`` (the list
as written by the API and `mailveil incidents report affected`, each person's disclosure
entry found and proved against a signed checkpoint), then ``verify_affected`` on the file
(what a third party runs). Peak RSS per phase shows memory stays flat (proofs are computed
in batches of 1,000 people, each with its own subtree cache; the list goes to a file).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import insert, text

from _memory import reset_peak_rss, rss_mib
from mailveil.config import load_settings
from mailveil.contacts.models import Alias, Customer
from mailveil.contacts.principals import create_principal
from mailveil.db.base import utcnow
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory
from mailveil.detect.models import Incident, IncidentCulprit
from mailveil.incidents.blast import exposures
from mailveil.incidents.proofs import verify_affected, write_affected
from mailveil.ledger.append import Ledger
from mailveil.ledger.events import Event
from mailveil.ledger.signing import init_signing_key
from mailveil.vault import VaultKey

COUNTRIES = ("DE", "FR", "IE", "GB", "US", "ES", "IT", "NL", "PL", "SE")
BATCH = 5_000


def build(factory: object, settings: object, ledger: Ledger, people: int) -> int:
    """Customers, the culprit's aliases, one disclosure entry each among as many others."""
    now = utcnow()
    with factory() as session:  # type: ignore[operator]
        # A placeholder key row: the addresses are never decrypted here.
        session.add(VaultKey(id="k1", kek_id="bench", wrapped=b"\0", active=True))
        seller = create_principal(session, kind="seller", external_id="s-leaky")
        bystander = create_principal(session, kind="seller", external_id="s-other")
        for lo in range(0, people, BATCH):
            ids = range(lo + 1, min(people, lo + BATCH) + 1)
            session.execute(
                insert(Customer),
                [
                    {
                        "id": i,
                        "external_id": f"c-{i:08d}",
                        "address_ct": b"\0" * 16,
                        "address_dek": "k1",
                        "address_bidx": i.to_bytes(32, "big"),
                        "country": COUNTRIES[i % len(COUNTRIES)],
                        "subdivision": "CA" if i % len(COUNTRIES) == 4 else None,
                        "opt_outs": [],
                        "sensitive_topics": [],
                        "is_canary": False,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in ids
                ],
            )
            session.execute(
                insert(Alias),
                [
                    {
                        "customer_id": i,
                        "principal_id": seller.id,
                        "address": f"a{i:08x}@relay.example",
                        "reverse_address": f"r{i:08x}@relay.example",
                        "created_at": now,
                    }
                    for i in ids
                ],
            )
            events = []
            for i in ids:
                events.append(
                    Event(
                        "disclosure",
                        "bench",
                        f"customer:{i}",
                        f"a{i:08x}@relay.example",
                        "order",
                        None,
                        {"principal": f"principal:{seller.id}", "policies": [], "minted": True},
                    )
                )
                events.append(
                    Event(
                        "disclosure",
                        "bench",
                        f"customer:{i}",
                        None,
                        "order",
                        None,
                        {"principal": f"principal:{bystander.id}"},
                    )
                )
            ledger.append(session, events)  # type: ignore[arg-type]
            session.commit()
        incident = Incident(
            status="confirmed", title="bench", source_principal_id=seller.id, signal_count=1
        )
        session.add(incident)
        session.flush()
        session.add(
            IncidentCulprit(
                incident_id=incident.id, principal_id=seller.id, role="source", evidence_count=1
            )
        )
        session.commit()
        return incident.id


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="2,000 people")
    args, _rest = parser.parse_known_args()
    people = 2_000 if args.quick else args.people
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(env={}, data_dir=Path(tmp) / "var")
        init_signing_key(settings)
        ledger = Ledger.load(settings)
        engine = make_engine(url=f"sqlite:///{tmp}/bench.db")
        upgrade(engine)
        factory = make_session_factory(engine)
        t = time.perf_counter()
        incident_id = build(factory, settings, ledger, people)
        console.print(
            f"built {people:,} people, {2 * people:,} ledger entries in "
            f"{time.perf_counter() - t:.1f} s"
        )
        rows = []
        with factory() as session:
            seller = session.execute(
                text("SELECT id FROM principals WHERE external_id = 's-leaky'")
            ).scalar_one()
            reset_peak_rss()
            t = time.perf_counter()
            streamed = sum(1 for _ in exposures(session, [seller]))
            bare = time.perf_counter() - t
            rows.append(("peer: exposures streamed, no proofs", streamed, bare, rss_mib("VmHWM")))
            listing = Path(tmp) / "affected.ndjson"
            reset_peak_rss()
            t = time.perf_counter()
            with listing.open("w", encoding="utf-8") as out:
                summary = write_affected(session, settings, ledger, incident_id, out)
            listed = time.perf_counter() - t
            rows.append(
                ("write_affected (a proof per person)", summary.people, listed, rss_mib("VmHWM"))
            )
            session.commit()
        reset_peak_rss()
        t = time.perf_counter()
        with listing.open(encoding="utf-8") as lines:
            check = verify_affected(lines, verifier_key=ledger.signer.verifier_key)
        verified = time.perf_counter() - t
        rows.append(("verify_affected (third party)", people, verified, rss_mib("VmHWM")))
        size = listing.stat().st_size
        engine.dispose()
    table = Table(
        "phase",
        "people",
        "seconds",
        "people/s",
        "peak RSS MiB",
        title=f"exact affected list, {people:,} people",
    )
    for what, n, secs, peak in rows:
        table.add_row(what, f"{n:,}", f"{secs:.2f}", f"{n / secs:,.0f}", f"{peak:,.0f}")
    console.print(table)
    console.print(
        f"proofs cost {listed / max(bare, 1e-9):.1f}x the bare stream; "
        f"{size / max(people, 1):,.0f} bytes a person; "
        f"the list {'verifies' if check.ok else 'DOES NOT VERIFY'}"
    )
    if summary.people != people or not check.ok or summary.unproven:
        print("error: the list is not exact, or does not verify", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
