"""The detection job: the ledger scan, and on request the access-anomaly job, each turned
into signals."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.db.session import SQLITE_IMMEDIATE
from mailveil.detect.models import Signal
from mailveil.detect.scan import scan_ledger
from mailveil.detect.signals import record_signal
from mailveil.detect.strength import Piece
from mailveil.ledger.append import Ledger
from mailveil.logs import get_logger

if TYPE_CHECKING:
    from mailveil.ops.metrics import Metrics

_log = get_logger("mailveil.detect")

ANOMALY_LOOKBACK_DAYS = 7  # days scored per run; the job reads the history it needs itself


@dataclass
class DetectionRun:
    entries_scanned: int = 0
    signals: dict[str, int] = field(default_factory=dict)
    anomaly_days_scored: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entries_scanned": self.entries_scanned, "signals": self.signals}
        if self.anomaly_days_scored is not None:
            out["anomaly_employee_days_scored"] = self.anomaly_days_scored
        return out


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    # The job reads through connections of its own while this session may hold SQLite's
    # write lock (an API request begins IMMEDIATE): they must read, not queue behind it.
    return engine.execution_options(**{SQLITE_IMMEDIATE: False})


def file_anomalies(
    session: Session,
    settings: Settings,
    ledger: Ledger,
    *,
    since: date | None = None,
    until: date | None = None,
    budget_per_1000: float = 1.0,
) -> tuple[int, int]:
    """Run the anomaly job over committed ledger entries and file one signal per new alert
    (employee, day); (signals filed, employee-days scored)."""
    from mailveil.detect.anomalies import run_anomaly_job  # numpy, DuckDB: loaded on use

    until = until or date.today()
    since = since or until - timedelta(days=ANOMALY_LOOKBACK_DAYS)
    report = run_anomaly_job(
        _engine(session), settings, since=since, until=until, budget_per_1000=budget_per_1000
    )
    filed = 0
    for alert in report.alerts:
        day = alert.day.isoformat()
        known = session.scalars(
            select(Signal.evidence).where(
                Signal.kind == "access_anomaly", Signal.source_principal_id == alert.employee_id
            )
        )
        if any(e.get("day") == day for e in known):
            continue
        piece = Piece(
            "source", alert.employee_id, "statistical", "access-anomaly",
            f"access on {day} far outside the employee's own history and peers: "
            + "; ".join(alert.reasons[:3]),
            counted=True, weak=True, score=float(alert.score),
        )  # fmt: skip
        record_signal(
            session,
            ledger,
            kind="access_anomaly",
            confidence="anomaly",
            summary=f"unusual access on {day}: " + "; ".join(alert.reasons[:3]),
            score=float(alert.score),
            evidence={"day": day, "reasons": alert.reasons, "features": alert.features},
            pieces=[piece],
        )
        filed += 1
    return filed, report.employee_days


def run_detection(
    session: Session,
    settings: Settings,
    ledger: Ledger,
    *,
    anomalies: bool = False,
    metrics: Metrics | None = None,
) -> DetectionRun:
    """Scan the ledger from where the last run stopped (and, with ``anomalies``, score the
    last week of employee access). Does not commit. Logs one ``detection_run`` line (and
    counts it in ``metrics`` when given)."""
    started = time.perf_counter()
    try:
        scanned = scan_ledger(session, ledger)
        run = DetectionRun(scanned.entries, dict(scanned.signals))
        if anomalies:
            filed, days = file_anomalies(session, settings, ledger)
            if filed:
                run.signals["access_anomaly"] = filed
            run.anomaly_days_scored = days
    except Exception as exc:
        if metrics is not None:
            metrics.detect_runs.labels("failed").inc()
        _log.error("detection_run", outcome="failed", error_type=type(exc).__name__)
        raise
    if metrics is not None:
        metrics.detect_runs.labels("ok").inc()
        for kind, n in run.signals.items():
            metrics.detect_signals_filed.labels(kind).inc(n)
    _log.info(
        "detection_run",
        outcome="ok",
        entries_scanned=run.entries_scanned,
        signals=run.signals,
        anomaly_days_scored=run.anomaly_days_scored,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return run


__all__ = ["DetectionRun", "file_anomalies", "run_detection"]
