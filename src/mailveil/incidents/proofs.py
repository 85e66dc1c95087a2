"""What the report proves from the ledger, each claim an entry with an RFC 9162 inclusion
proof against one signed (and, when configured, witnessed) checkpoint:

- the moment of awareness: the ``incident_opened`` entry, the first that made the incident
  known, and the first evidence entry behind it (the stranger's mail, the canary hit...);
- the breach window: the entry where a culprit was first given an affected person's data,
  and the first evidence of misuse;
- the exact list of affected people (``write_affected``): every person in the blast radius,
  by internal and external id, never an address, each with the entries that put them there
  (the disclosure of their alias to a culprit, a culprit's view of their address through a
  reveal). ``verify_affected`` checks such a file from itself alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.models import Alias, Customer
from mailveil.detect.evidence import BundleCheck
from mailveil.detect.models import Incident, Signal
from mailveil.errors import NotFound
from mailveil.incidents.blast import Exposure, culprits_of, exposures
from mailveil.ledger import merkle
from mailveil.ledger.append import Checkpoint, Ledger, latest_checkpoint, ledger_size
from mailveil.ledger.layout import TILE_HEIGHT
from mailveil.ledger.models import LedgerEntry
from mailveil.ledger.proofs import DbTree
from mailveil.policy.facts import chunks
from mailveil.witness.policy import check_bundle_checkpoint
from mailveil.witness.queries import evidence_checkpoint, evidence_fields, witnessed_checkpoint

FORMAT = "mailveil-affected/1"
BATCH = 1000  # people per proof batch (one subtree cache each: memory stays flat)


def _incident_markers(incident_id: int) -> tuple[str, str]:
    # Details are canonical JSON (sorted keys, no spaces): the id is followed by , or }.
    return (f'"incident":{incident_id},', f'"incident":{incident_id}}}')


def opened_entry(session: Session, incident_id: int) -> LedgerEntry | None:
    """The ``incident_opened`` entry of the incident: the first that made it known."""
    return session.scalar(
        select(LedgerEntry)
        .where(
            LedgerEntry.kind == "incident_opened",
            or_(*(LedgerEntry.detail.contains(m) for m in _incident_markers(incident_id))),
        )
        .order_by(LedgerEntry.seq)
        .limit(1)
    )


def first_evidence(session: Session, incident_id: int) -> LedgerEntry | None:
    """The earliest ledger entry a signal of the incident was read from."""
    seq = session.scalar(
        select(func.min(Signal.ledger_seq)).where(
            Signal.incident_id == incident_id, Signal.ledger_seq.is_not(None)
        )
    )
    return None if seq is None else session.get(LedgerEntry, seq)


def first_exposure(session: Session, principals: Sequence[int]) -> LedgerEntry | None:
    """The first disclosure to a culprit of an alias of a real (non-canary) customer: the
    earliest the data could have left."""
    if not principals:
        return None
    row = session.execute(
        select(Alias.address)
        .join(Customer, Customer.id == Alias.customer_id)
        .where(Alias.principal_id.in_(list(principals)), Customer.is_canary.is_(False))
        .order_by(Alias.created_at, Alias.id)
        .limit(1)
    ).first()
    if row is None:
        return None
    return session.scalar(
        select(LedgerEntry)
        .where(LedgerEntry.alias == row[0], LedgerEntry.kind == "disclosure")
        .order_by(LedgerEntry.seq)
        .limit(1)
    )


def proof_checkpoint(
    session: Session, settings: Settings, ledger: Ledger | None, size: int
) -> Checkpoint | None:
    """The checkpoint to prove ``size`` entries against: the newest witnessed one covering
    them, else (with a ledger) one signed now, else the latest signed one if it covers them."""
    if ledger is not None:
        return evidence_checkpoint(session, settings, ledger, size)
    found = witnessed_checkpoint(session, settings, max(size, 1))
    if found is not None:
        return found
    latest = latest_checkpoint(session)
    return latest if latest is not None and latest.tree_size >= size else None


def checkpoint_section(
    session: Session, settings: Settings, checkpoint: Checkpoint, verifier_key: str
) -> dict[str, Any]:
    return {
        "tree_size": checkpoint.tree_size,
        "root_hash": checkpoint.root.hex(),
        "time": checkpoint.created_at.isoformat(),
        "note": checkpoint.note,
        "verifier_key": verifier_key,
        **evidence_fields(session, settings, checkpoint),
    }


class TileTree(DbTree):
    """``DbTree`` reading leaf hashes a 256-leaf tile at a time: the low levels of many
    proofs in one tile cost one query, not one per level per proof."""

    def __init__(self, session: Session, size: int) -> None:
        super().__init__(session)
        self.size = size
        self._tiles: dict[int, list[bytes]] = {}

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        tile = start >> TILE_HEIGHT
        if end > self.size or (end - 1) >> TILE_HEIGHT != tile:
            return super().leaf_hashes(start, end)
        base = tile << TILE_HEIGHT
        if tile not in self._tiles:
            self._tiles[tile] = super().leaf_hashes(base, min(base + (1 << TILE_HEIGHT), self.size))
        return self._tiles[tile][start - base : end - base]


def prove_entries(
    session: Session, entries: Iterable[LedgerEntry], checkpoint: Checkpoint | None
) -> list[dict[str, Any]]:
    """Each entry with its leaf hash and inclusion proof (``proof`` is None when no signed
    checkpoint covers it yet)."""
    tree = TileTree(session, checkpoint.tree_size if checkpoint is not None else 0)
    out = []
    for e in entries:
        covered = checkpoint is not None and e.seq < checkpoint.tree_size
        out.append(
            {
                "seq": e.seq,
                "kind": e.kind,
                "time": e.time.isoformat(),
                "leaf_hash": e.leaf_hash.hex(),
                "proof": (
                    [
                        p.hex()
                        for p in merkle.inclusion_path(e.seq, checkpoint.tree_size, tree.subtree)
                    ]
                    if covered and checkpoint is not None
                    else None
                ),
                "tree_size": checkpoint.tree_size if covered and checkpoint is not None else None,
            }
        )
    return out


# -- the exact list of affected people --------------------------------------------------


@dataclass
class AffectedSummary:
    people: int = 0
    entries: int = 0
    unproven: int = 0  # people with a route no ledger entry backs
    tree_size: int = 0


def _alias_addresses(session: Session, pairs: set[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """The alias address of each (customer, principal) pair."""
    out: dict[tuple[int, int], str] = {}
    principals = sorted({p for _, p in pairs})
    for ids in chunks(sorted({c for c, _ in pairs})):
        for cid, pid, address in session.execute(
            select(Alias.customer_id, Alias.principal_id, Alias.address).where(
                Alias.customer_id.in_(ids), Alias.principal_id.in_(principals)
            )
        ):
            if (cid, pid) in pairs:
                out[(cid, pid)] = address
    return out


def _first_disclosures(session: Session, addresses: list[str]) -> dict[str, int]:
    """The first disclosure entry of each alias (an alias belongs to one principal, so any
    disclosure of it was to that principal)."""
    out: dict[str, int] = {}
    for part in chunks(sorted(addresses)):
        for alias, seq in session.execute(
            select(LedgerEntry.alias, func.min(LedgerEntry.seq))
            .where(LedgerEntry.alias.in_(part), LedgerEntry.kind == "disclosure")
            .group_by(LedgerEntry.alias)
        ):
            out[str(alias)] = int(seq)
    return out


def _reveal_views(session: Session, customers: list[int]) -> dict[tuple[int, int], int]:
    """(customer, reveal request) -> the first ``reveal_viewed`` entry."""
    out: dict[tuple[int, int], int] = {}
    for part in chunks([f"customer:{c}" for c in sorted(customers)]):
        for subject, seq, detail in session.execute(
            select(LedgerEntry.subject, LedgerEntry.seq, LedgerEntry.detail).where(
                LedgerEntry.subject.in_(part), LedgerEntry.kind == "reveal_viewed"
            )
        ):
            request = int(json.loads(detail).get("request", -1))
            key = (int(str(subject).partition(":")[2]), request)
            out[key] = min(out.get(key, int(seq)), int(seq))
    return out


def _route_entries(session: Session, batch: list[Exposure]) -> dict[int, list[LedgerEntry | str]]:
    """For each person of the batch, the ledger entry behind each route (or the route
    itself, as text, when no entry backs it)."""
    pairs = {
        (x.customer_id, int(route.rpartition(":")[2]))
        for x in batch
        for route in x.routes
        if route.startswith("alias:")
    }
    addresses = _alias_addresses(session, pairs)
    disclosed = _first_disclosures(session, list(addresses.values()))
    viewed = _reveal_views(
        session, [x.customer_id for x in batch if any(r.startswith("reveal:") for r in x.routes)]
    )
    seqs = sorted(set(disclosed.values()) | set(viewed.values()))
    by_seq = {
        e.seq: e
        for part in chunks(seqs)
        for e in session.scalars(select(LedgerEntry).where(LedgerEntry.seq.in_(part)))
    }
    out: dict[int, list[LedgerEntry | str]] = {}
    for x in batch:
        items: list[LedgerEntry | str] = []
        for route in x.routes:
            kind, _, ref = route.partition(":")
            found: int | None
            if kind == "alias":
                address = addresses.get((x.customer_id, int(ref.rpartition(":")[2])))
                found = disclosed.get(address) if address else None
            else:
                found = viewed.get((x.customer_id, int(ref)))
            items.append(by_seq[found] if found is not None and found in by_seq else route)
        out[x.customer_id] = items
    return out


def affected_people(
    session: Session, incident_id: int, checkpoint: Checkpoint, *, with_leaves: bool = False
) -> Iterator[dict[str, Any]]:
    """Every affected person once, in id order, with the proofs of how they are affected."""
    sources = culprits_of(session, incident_id)
    if not sources:
        return
    batch: list[Exposure] = []
    stream = exposures(session, sources)

    def flush(items: list[Exposure]) -> Iterator[dict[str, Any]]:
        routes = _route_entries(session, items)
        ids = [x.customer_id for x in items]
        extra = {
            cid: (ext, sub)
            for cid, ext, sub in session.execute(
                select(Customer.id, Customer.external_id, Customer.subdivision).where(
                    Customer.id.in_(ids)
                )
            )
        }
        proven = [e for items_ in routes.values() for e in items_ if isinstance(e, LedgerEntry)]
        proofs = {p["seq"]: p for p in prove_entries(session, proven, checkpoint)}
        leaves = {e.seq: e.leaf for e in proven} if with_leaves else {}
        for x in items:
            entries, unproven = [], []
            for item in routes[x.customer_id]:
                if isinstance(item, str):
                    unproven.append(item)
                    continue
                proof = dict(proofs[item.seq])
                if with_leaves:
                    proof["leaf"] = leaves[item.seq]
                entries.append(proof)
            external, subdivision = extra.get(x.customer_id, ("", None))
            yield {
                "customer_id": x.customer_id,
                "external_id": external,
                "country": x.country,
                "subdivision": subdivision,
                "exposed": "real_address" if x.real_address else "alias",
                "deleted": x.deleted,
                "first_at": x.first_at.isoformat(),
                "entries": entries,
                "unproven": unproven,
            }

    for exposure in stream:
        batch.append(exposure)
        if len(batch) >= BATCH:
            yield from flush(batch)
            batch = []
    if batch:
        yield from flush(batch)


def write_affected(
    session: Session,
    settings: Settings,
    ledger: Ledger,
    incident_id: int,
    out: IO[str],
    *,
    with_leaves: bool = False,
    progress: Callable[[int], None] | None = None,
) -> AffectedSummary:
    """Write the list as NDJSON: a header (format, incident, checkpoint), one line a person,
    and a trailer with the counts (a cut-off file fails verification)."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(f"no incident {incident_id}")
    checkpoint = proof_checkpoint(session, settings, ledger, ledger_size(session))
    if checkpoint is None:
        raise NotFound("the ledger is empty")
    header = {
        "format": FORMAT,
        "incident": incident_id,
        "with_leaves": with_leaves,
        "checkpoint": checkpoint_section(session, settings, checkpoint, ledger.signer.verifier_key),
    }
    out.write(json.dumps(header, sort_keys=True) + "\n")
    summary = AffectedSummary(tree_size=checkpoint.tree_size)
    for person in affected_people(session, incident_id, checkpoint, with_leaves=with_leaves):
        out.write(json.dumps(person, sort_keys=True) + "\n")
        summary.people += 1
        summary.entries += len(person["entries"])
        summary.unproven += bool(person["unproven"])
        if progress is not None and summary.people % BATCH == 0:
            progress(summary.people)
    trailer = {"end": True, "people": summary.people, "entries": summary.entries}
    out.write(json.dumps(trailer, sort_keys=True) + "\n")
    return summary


def _claim_ok(person: dict[str, Any], entry: dict[str, Any], leaf: dict[str, Any]) -> str:
    """Why the leaf does not back the person's presence ("" when it does)."""
    if leaf.get("seq") != entry["seq"]:
        return "the leaf names another seq"
    if leaf.get("subject") != f"customer:{person['customer_id']}":
        return "the entry is about someone else"
    if leaf.get("kind") not in ("disclosure", "reveal_viewed"):
        return f"a {leaf.get('kind')} entry does not put anyone in a blast radius"
    return ""


def verify_affected(
    lines: Iterable[str],
    *,
    verifier_key: str | None = None,
    witnesses: Sequence[str] = (),
    quorum: int | None = None,
) -> BundleCheck:
    """Check a list from itself alone: the checkpoint's signature (and the witnesses'), every
    inclusion proof, and, when leaves are included, that each entry is a disclosure to or a
    view by a culprit about that very person; and that the trailer's counts match."""
    result = BundleCheck()
    it = iter(lines)
    try:
        header = json.loads(next(it))
        if header.get("format") != FORMAT:
            result.add("format", False, f"not a {FORMAT} file")
            return result
        rows, parsed, warnings = check_bundle_checkpoint(
            header["checkpoint"], verifier_key, witnesses, quorum
        )
        for row in rows:
            result.add(*row)
        result.warnings.extend(warnings)
        if parsed is None:
            return result
        people = entries = bad = 0
        trailer = None
        for number, line in enumerate(it, start=2):
            item = json.loads(line)
            if item.get("end"):
                trailer = item
                continue
            if trailer is not None:
                result.add("trailer is last", False, f"line {number} follows the trailer")
            people += 1
            for entry in item["entries"]:
                entries += 1
                why = _check_entry(item, entry, parsed.size, parsed.root)
                if why:
                    bad += 1
                    if bad <= 20:
                        result.add(f"line {number}: entry {entry.get('seq')}", False, why)
        result.add("every inclusion proof verifies", bad == 0, f"{entries:,} entries")
        counts_ok = trailer is not None and (trailer["people"], trailer["entries"]) == (
            people,
            entries,
        )
        result.add(
            "the file is whole (trailer counts match)",
            counts_ok,
            f"{people:,} people" if counts_ok else "missing or wrong trailer: the file was cut",
        )
        if not header.get("with_leaves"):
            result.warnings.append(
                "no leaves in the file: the proofs show the entries exist, not what they say "
                "(export with leaves to check each claim)"
            )
    except (StopIteration, KeyError, TypeError, ValueError) as exc:
        result.add("structure", False, f"malformed file: {exc}")
    return result


def _check_entry(person: dict[str, Any], entry: dict[str, Any], size: int, root: bytes) -> str:
    leaf_hash = bytes.fromhex(entry["leaf_hash"])
    if "leaf" in entry:
        if merkle.leaf_hash(str(entry["leaf"]).encode("utf-8")) != leaf_hash:
            return "the leaf does not hash to leaf_hash"
        why = _claim_ok(person, entry, json.loads(entry["leaf"]))
        if why:
            return why
    if entry.get("proof") is None:
        return "no inclusion proof"
    try:
        merkle.verify_inclusion(
            int(entry["seq"]), size, leaf_hash, [bytes.fromhex(h) for h in entry["proof"]], root
        )
    except merkle.ProofError as exc:
        return str(exc)
    return ""


__all__ = [
    "FORMAT",
    "AffectedSummary",
    "affected_people",
    "checkpoint_section",
    "first_evidence",
    "first_exposure",
    "opened_entry",
    "proof_checkpoint",
    "prove_entries",
    "verify_affected",
    "write_affected",
]
