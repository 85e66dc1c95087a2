"""Triage of signals (confirm, dismiss with a reason, merge into another incident), each a
ledger entry under the person; abuse reports in words; evidence strength and the
attribution graph's data. On SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from detect_testkit import Kit
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailveil.contacts.principals import create_principal
from mailveil.detect.attribution_graph import attribution, strength_of
from mailveil.detect.models import Incident, IncidentCulprit, Signal
from mailveil.detect.signals import record_signal
from mailveil.detect.strength import Piece
from mailveil.detect.triage import (
    confirm_signal,
    dismiss_signal,
    merge_signal,
    queue_counts,
    triage_queue,
)
from mailveil.errors import Conflict, InvalidInput
from mailveil.ledger.models import LedgerEntry


def _signal(session: Session, kit: Kit, source: int | None, **kw: object) -> Signal:
    defaults: dict[str, object] = {"kind": "stranger_at_alias", "confidence": "exact"}
    defaults.update(kw)
    return record_signal(
        session,
        kit.ledger,
        summary="test",
        source_principal_id=source,
        **defaults,  # type: ignore[arg-type]
    )


def _triaged(session: Session, actor: str) -> list[dict[str, object]]:
    rows = session.scalars(
        select(LedgerEntry).where(LedgerEntry.kind == "signal_triaged", LedgerEntry.actor == actor)
    )
    return [json.loads(e.detail) for e in rows]


def test_confirm_dismiss_and_merge_are_ledgered_as_the_person(session: Session, kit: Kit) -> None:
    leaker = create_principal(session, kind="employee", external_id="e-leak")
    other = create_principal(session, kind="seller", external_id="s-other")
    buyer = create_principal(session, kind="seller", external_id="s-buyer")
    a = _signal(session, kit, leaker.id, alias="a1@relay.mailveil.localhost")
    b = _signal(session, kit, leaker.id)
    c = _signal(session, kit, other.id, recipient_principal_id=buyer.id)
    assert {s.id for s in triage_queue(session)} >= {a.id, b.id, c.id}
    assert queue_counts(session)["triage"] >= 3

    confirm_signal(session, kit.ledger, a.id, actor="principal:77")
    dismiss_signal(session, kit.ledger, b.id, reason="a test mail", actor="principal:77")
    target = a.incident_id
    assert target is not None and c.incident_id != target
    merge_signal(session, kit.ledger, c.id, incident_id=target, actor="principal:77")

    assert (a.triage, b.triage, c.triage) == ("confirmed", "dismissed", "confirmed")
    assert b.triage_reason == "a test mail" and c.incident_id == target
    culprits = set(
        session.scalars(
            select(IncidentCulprit.principal_id).where(IncidentCulprit.incident_id == target)
        )
    )
    assert culprits == {leaker.id, other.id, buyer.id}  # the merged signal's principals
    incident = session.get(Incident, target)
    assert incident is not None and incident.signal_count == 3
    actions = sorted(str(d["action"]) for d in _triaged(session, "principal:77"))
    assert actions == ["confirmed", "dismissed", "merged"]
    assert {s.id for s in triage_queue(session)}.isdisjoint({a.id, b.id, c.id})


def test_triage_refuses_what_makes_no_sense(session: Session, kit: Kit) -> None:
    leaker = create_principal(session, kind="employee", external_id="e-leak2")
    s = _signal(session, kit, leaker.id)
    with pytest.raises(InvalidInput):
        dismiss_signal(session, kit.ledger, s.id, reason="  ", actor="p")
    confirm_signal(session, kit.ledger, s.id, actor="p")
    with pytest.raises(Conflict):
        confirm_signal(session, kit.ledger, s.id, actor="p")
    assert s.incident_id is not None
    with pytest.raises(Conflict):
        merge_signal(session, kit.ledger, s.id, incident_id=s.incident_id, actor="p")
    closed = session.get(Incident, s.incident_id)
    assert closed is not None
    closed.status = "closed"
    other = _signal(session, kit, create_principal(session, kind="seller", external_id="x").id)
    with pytest.raises(Conflict):
        merge_signal(session, kit.ledger, other.id, incident_id=closed.id, actor="p")


def test_a_signal_without_a_source_gets_an_incident_when_confirmed(
    session: Session, kit: Kit
) -> None:
    lonely = _signal(session, kit, None, kind="abuse_report", confidence="ranked", score=3.0)
    assert lonely.incident_id is None
    confirm_signal(session, kit.ledger, lonely.id, actor="p")
    assert lonely.incident_id is not None


def _piece(role: str, strength: str, basis: str, *, counted: bool, score: float | None = None
           ) -> dict[str, object]:  # fmt: skip
    return {"role": role, "principal_id": 7, "strength": strength, "basis": basis,
            "reason": f"{basis} reason", "counted": counted, "score": score}  # fmt: skip


@pytest.mark.parametrize(
    ("pieces", "level", "basis"),
    [
        ([_piece("recipient", "authenticated", "smtp-auth", counted=True)], "authenticated",
         "smtp-auth reason"),
        ([_piece("recipient", "authenticated", "dkim-aligned", counted=True),
          _piece("recipient", "claimed", "header-from", counted=False)], "authenticated",
         "dkim-aligned reason"),
        ([_piece("recipient", "relay-record", "relay-message", counted=True)], "relay-record",
         "relay-message reason"),
        ([_piece("source", "relay-record", "alias-disclosure", counted=True),
          _piece("recipient", "claimed", "header-from", counted=False)], "claimed",
         "header-from reason"),
        ([_piece("recipient", "claimed", "dkim-unbound", counted=False)], "claimed",
         "dkim-unbound reason"),
        ([_piece("source", "relay-record", "alias-disclosure", counted=True)], "unattributed",
         None),
        ([], "unattributed", None),
        ([_piece("source", "statistical", "guilt-ranking", counted=True, score=9.0)],
         "statistical", "guilt-ranking reason"),
    ],
)  # fmt: skip
def test_each_signal_shows_its_strongest_piece_of_evidence(
    pieces: list[dict[str, object]], level: str, basis: str | None
) -> None:
    signal = Signal(
        kind="stranger_at_alias", confidence="exact", evidence={"pieces": pieces}, summary=""
    )
    shown = strength_of(signal)
    assert shown.level == level
    if basis is not None:
        assert shown.basis == basis


def test_attribution_prefers_the_relays_record_and_skips_dismissed(
    session: Session, kit: Kit
) -> None:
    leaker = create_principal(session, kind="employee", external_id="e-leak3")
    buyer = create_principal(session, kind="seller", external_id="s-buyer3")
    alias = "zz1@relay.mailveil.localhost"
    _signal(session, kit, leaker.id, kind="abuse_report", alias=alias, evidence={"sender": "x@y"})
    _signal(
        session, kit, leaker.id, alias=alias, recipient_principal_id=buyer.id,
        pieces=[
            Piece("source", leaker.id, "relay-record", "alias-disclosure", "disclosed",
                  counted=True),
            Piece("recipient", buyer.id, "authenticated", "dkim-aligned", "bound DKIM pass",
                  counted=True),
        ],
    )  # fmt: skip
    gone = _signal(session, kit, leaker.id, alias="zz2@relay.mailveil.localhost")
    dismiss_signal(session, kit.ledger, gone.id, reason="test", actor="p")
    assert gone.incident_id is not None
    found = attribution(session, gone.incident_id)
    assert [(link.alias, link.user, link.strength) for link in found.links] == [
        (alias, f"principal:{buyer.id}", "authenticated")
    ]
    assert found.principals[leaker.id].startswith("employee")
