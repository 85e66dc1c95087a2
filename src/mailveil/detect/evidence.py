"""Evidence bundles: what a third party (a court, the police) needs to check an incident's
attribution without access to mailveil's database.

A bundle holds, for each of the incident's signals, the ledger entries that make the claim
(the entry where the leaked alias was disclosed to the source principal, and the entry where
the relay saw it used by someone else, or a canary hit), each as the exact leaf text that was
hashed, with an RFC 9162 inclusion proof against one signed checkpoint, and the checkpoint's
verifier key. The checkpoint is the newest one a quorum of witnesses cosigned, when one covers
the entries (``cosigned_note`` carries their cosignatures). ``verify_bundle`` re-checks
everything from the bundle alone: the checkpoint signature, the witnesses' cosignatures when
the verifier names the witnesses it trusts, every inclusion proof, and that each claim says
what its entries say.

Every claim carries its evidence pieces with their strength (``strength``: relay-record,
authenticated, statistical, claimed) and every culprit the strongest strength that named it.
The verifier re-derives what it can from the ledger entries themselves: a counted
``authenticated`` piece must rest on an entry recording that SMTP AUTH, or an aligned SPF or
DKIM pass bound to the recipient; a ``claimed`` piece never counts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.detect.models import Incident, IncidentCulprit, Signal
from mailveil.detect.strength import leaf_supports, pieces_of
from mailveil.errors import NotFound
from mailveil.ledger import merkle
from mailveil.ledger.append import Ledger
from mailveil.ledger.models import LedgerEntry
from mailveil.ledger.proofs import DbTree
from mailveil.witness.policy import check_bundle_checkpoint
from mailveil.witness.queries import evidence_checkpoint, evidence_fields

FORMAT = "mailveil-evidence/1"
MAX_DISCLOSURES_PER_ALIAS = 3  # the first disclosures of an alias prove whom it went to


def _claim_entries(session: Session, signal: Signal) -> list[int]:
    seqs: list[int] = []
    if signal.ledger_seq is not None:
        seqs.append(signal.ledger_seq)
    if signal.alias:
        seqs.extend(
            session.scalars(
                select(LedgerEntry.seq)
                .where(LedgerEntry.alias == signal.alias, LedgerEntry.kind == "disclosure")
                .order_by(LedgerEntry.seq)
                .limit(MAX_DISCLOSURES_PER_ALIAS)
            )
        )
    return seqs


def build_bundle(
    session: Session, settings: Settings, ledger: Ledger, incident_id: int
) -> dict[str, Any]:
    """The evidence bundle of one incident (signs a checkpoint covering it if needed)."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(f"no incident {incident_id}")
    signals = list(
        session.scalars(select(Signal).where(Signal.incident_id == incident_id).order_by(Signal.id))
    )
    culprits = list(
        session.scalars(select(IncidentCulprit).where(IncidentCulprit.incident_id == incident_id))
    )
    claims = []
    wanted: set[int] = set()
    for signal in signals:
        seqs = _claim_entries(session, signal)
        wanted.update(seqs)
        claims.append(
            {
                "signal": signal.id,
                "kind": signal.kind,
                "confidence": signal.confidence,
                "summary": signal.summary,
                "source": f"principal:{signal.source_principal_id}"
                if signal.source_principal_id is not None
                else None,
                "recipient": f"principal:{signal.recipient_principal_id}"
                if signal.recipient_principal_id is not None
                else None,
                "alias": signal.alias,
                "customer": f"customer:{signal.customer_id}" if signal.customer_id else None,
                "evidence_entry": signal.ledger_seq,
                "entries": seqs,
                "strength": {
                    "source": signal.source_strength,
                    "recipient": signal.recipient_strength,
                },
                "pieces": [p.to_dict() for p in pieces_of(signal.evidence)],
            }
        )
    checkpoint = evidence_checkpoint(session, settings, ledger, max(wanted, default=-1) + 1)
    if checkpoint is None:
        raise NotFound("the ledger is empty")
    tree = DbTree(session)
    size = checkpoint.tree_size
    entries = []
    for seq, leaf in session.execute(
        select(LedgerEntry.seq, LedgerEntry.leaf)
        .where(LedgerEntry.seq.in_(sorted(wanted)))
        .order_by(LedgerEntry.seq)
    ):
        path = merkle.inclusion_path(seq, size, tree.subtree)
        entries.append({"seq": seq, "leaf": leaf, "proof": [p.hex() for p in path]})
    return {
        "format": FORMAT,
        "incident": {
            "id": incident.id,
            "status": incident.status,
            "title": incident.title,
            "detected_at": incident.detected_at.isoformat(),
            "source": f"principal:{incident.source_principal_id}"
            if incident.source_principal_id is not None
            else None,
        },
        "culprits": [
            {
                "principal": f"principal:{c.principal_id}",
                "role": c.role,
                "evidence": c.evidence_count,
                "strength": c.strength,
                "strong": bool(c.strong),
            }
            for c in culprits
        ],
        "claims": claims,
        "entries": entries,
        "checkpoint": {
            "tree_size": size,
            "root_hash": checkpoint.root.hex(),
            "note": checkpoint.note,
            "verifier_key": ledger.signer.verifier_key,
            **evidence_fields(session, settings, checkpoint),
        },
    }


@dataclass
class BundleCheck:
    ok: bool = True
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, what: str, passed: bool, why: str = "") -> None:
        self.checks.append((what, passed, why))
        self.ok = self.ok and passed


def _leaf(entry: dict[str, Any]) -> dict[str, Any]:
    value = json.loads(entry["leaf"])
    if not isinstance(value, dict):
        raise ValueError("a leaf is a JSON object")
    return value


def verify_bundle(
    bundle: Any,
    *,
    verifier_key: str | None = None,
    witnesses: Sequence[str] = (),
    quorum: int | None = None,
) -> BundleCheck:
    """Check a bundle from itself alone. Pass the operator's published ``verifier_key`` (the
    vkey or the base64 key) to pin it (otherwise the bundle's own key is used, which proves
    integrity, not origin), and the ``witnesses`` you trust (their vkeys) to require that
    ``quorum`` of them (default: all) cosigned the checkpoint."""
    result = BundleCheck()
    try:
        if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
            result.add("format", False, f"not a {FORMAT} bundle")
            return result
        rows, parsed, warnings = check_bundle_checkpoint(
            bundle["checkpoint"], verifier_key, witnesses, quorum
        )
        for row in rows:
            result.add(*row)
        result.warnings.extend(warnings)
        if parsed is None:
            return result
        leaves: dict[int, dict[str, Any]] = {}
        for entry in bundle["entries"]:
            seq = int(entry["seq"])
            leaf_text = str(entry["leaf"])
            proof = [bytes.fromhex(h) for h in entry["proof"]]
            try:
                merkle.verify_inclusion(
                    seq,
                    parsed.size,
                    merkle.leaf_hash(leaf_text.encode("utf-8")),
                    proof,
                    parsed.root,
                )
                content = _leaf(entry)
                passed = content.get("seq") == seq
                result.add(
                    f"entry {seq} is in the signed ledger", passed, "" if passed else "seq differs"
                )
                leaves[seq] = content
            except (merkle.ProofError, ValueError) as exc:
                result.add(f"entry {seq} is in the signed ledger", False, str(exc))
        for claim in bundle["claims"]:
            _check_claim(result, claim, leaves)
    except (KeyError, TypeError, ValueError) as exc:
        result.add("structure", False, f"malformed bundle: {exc}")
    return result


def _check_claim(
    result: BundleCheck, claim: dict[str, Any], leaves: dict[int, dict[str, Any]]
) -> None:
    label = f"signal {claim.get('signal')}"
    for seq in claim.get("entries", []):
        if seq not in leaves:
            result.add(f"{label}: entry {seq} present", False, "missing from the bundle")
            return
    alias = claim.get("alias")
    source = claim.get("source")
    entry_seq = claim.get("evidence_entry")
    evidence = leaves.get(entry_seq) if isinstance(entry_seq, int) else None
    if evidence is None:
        result.add(f"{label}: evidence entry", False, "no ledger entry backs the signal")
        return
    if alias:
        disclosed = [
            leaf
            for leaf in leaves.values()
            if leaf.get("kind") == "disclosure"
            and leaf.get("alias") == alias
            and (leaf.get("detail") or {}).get("principal") == source
        ]
        result.add(
            f"{label}: the alias was disclosed to {source}",
            bool(disclosed),
            f"ledger entry {disclosed[0]['seq']}"
            if disclosed
            else "no disclosure of it to the source",
        )
        used = evidence.get("alias") == alias
        result.add(
            f"{label}: the evidence entry concerns that alias ({evidence.get('kind')})",
            used,
            f"ledger entry {evidence.get('seq')}",
        )
    else:
        names = evidence.get("subject") == claim.get("customer")
        result.add(f"{label}: the evidence entry concerns {claim.get('customer')}", names, "")
    for piece in claim.get("pieces") or ():
        if not isinstance(piece, dict) or not piece.get("counted"):
            continue
        ok, why = leaf_supports(piece, evidence)
        what = f"{label}: {piece.get('role')} principal:{piece.get('principal_id')} counts as "
        result.add(what + str(piece.get("strength")), ok, why)


__all__ = ["FORMAT", "BundleCheck", "build_bundle", "verify_bundle"]
