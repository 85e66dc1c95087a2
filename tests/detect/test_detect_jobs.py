"""The detection job turns anomaly alerts into signals, once per (employee, day)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from detect_testkit import LAST, insider_history
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.detect.jobs import file_anomalies
from mailveil.detect.models import Incident, Signal
from mailveil.ledger.append import Ledger


def test_anomaly_alerts_become_signals_once(
    own_engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    insider = insider_history(own_engine, settings, monkeypatch)
    monkeypatch.undo()  # ledger times are real again for the signals themselves
    ledger = Ledger.load(settings)
    window = {"since": LAST - timedelta(days=9), "until": LAST, "budget_per_1000": 10.0}
    with Session(own_engine) as session, session.begin():
        filed, days = file_anomalies(session, settings, ledger, **window)
    assert (filed, days) == (1, 200)
    with Session(own_engine) as session, session.begin():
        assert file_anomalies(session, settings, ledger, **window)[0] == 0
        [signal] = session.scalars(select(Signal)).all()
        assert signal.kind == "access_anomaly" and signal.source_principal_id == insider
        assert signal.evidence["day"] == LAST.isoformat()
        assert any("exported" in r for r in signal.evidence["reasons"])
        incident = session.get(Incident, signal.incident_id)
        assert incident is not None and incident.source_principal_id == insider
