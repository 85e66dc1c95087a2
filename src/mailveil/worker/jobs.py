"""The periodic jobs a worker runs, and the claim that runs each slot of each job once.

A job is a plain function of the process's Runtime. The scheduler (``worker.service``)
claims a job's slot (``claim``) and queues it on the broker, so whichever worker is free
runs it; two schedulers on two hosts compute the same slot and only one claim succeeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.db.base import utcnow
from mailveil.db.session import session_scope
from mailveil.notify.models import Send
from mailveil.runtime import Runtime
from mailveil.worker.models import WorkerJob

log = logging.getLogger("mailveil.worker")


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[Runtime], dict[str, Any]]
    every_seconds: float = 0.0  # an interval job: slot = seconds since the epoch // interval
    daily_hour: int | None = None  # a daily job at this UTC hour: slot = the day's ordinal

    def slot(self, now: datetime) -> int:
        if self.daily_hour is not None:
            return now.date().toordinal()
        return int(now.timestamp() // self.every_seconds)


def claim(session: Session, name: str, slot: int, owner: str) -> bool:
    """True for exactly one caller per (job, slot), whatever the number of hosts. Commits."""
    known = session.scalar(select(WorkerJob.slot).where(WorkerJob.name == name))
    session.rollback()
    if known is not None and known >= slot:
        return False  # taken already: no write (every tick of every host asks)
    make = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(make(WorkerJob).values(name=name, slot=-1).on_conflict_do_nothing())
    done = session.execute(
        update(WorkerJob)
        .where(WorkerJob.name == name, WorkerJob.slot < slot)
        .values(slot=slot, claimed_by=owner[:64], started_at=utcnow(), finished_at=None)
    )
    session.commit()
    return getattr(done, "rowcount", 0) == 1


def finished(session: Session, name: str, outcome: str) -> None:
    session.execute(
        update(WorkerJob)
        .where(WorkerJob.name == name)
        .values(finished_at=utcnow(), outcome=outcome[:300])
    )
    session.commit()


# -- the jobs --------------------------------------------------------------------------------


def lapsed_sends(session: Session, now: datetime | None = None) -> list[int]:
    """Running sends no live worker holds: their worker died (its lease lapsed) or its
    message was lost. Each is driven again by a new message."""
    now = now or utcnow()
    return list(
        session.scalars(
            select(Send.id)
            .where(
                Send.status == "running",
                (Send.lease_until.is_(None)) | (Send.lease_until < now),
            )
            .order_by(Send.id)
        )
    )


def unconfirmed(runtime: Runtime) -> dict[str, Any]:
    """Recipients a crash left unconfirmed, in sends no worker drives any more: settled
    when the relay's record of their message has changed since (``notify.settle``)."""
    from mailveil.notify.models import Recipient, Template
    from mailveil.notify.settle import settle_unconfirmed
    from mailveil.notify.templates import owner_of

    settled = 0
    with runtime.session_factory() as s:
        ids = list(s.scalars(select(Recipient.send_id).where(Recipient.state == "unconfirmed")
                             .distinct()))  # fmt: skip
        for send_id in ids:
            send = s.get(Send, send_id)
            template = s.get(Template, send.template_id) if send is not None else None
            if send is None or template is None:
                continue
            settled += settle_unconfirmed(runtime, s, send, template, owner_of(s, template))
            s.commit()
    return {"sends": len(ids), "settled": settled}


def detect(runtime: Runtime) -> dict[str, Any]:
    from mailveil.detect.jobs import run_detection

    with session_scope(runtime.session_factory) as s:
        run = run_detection(s, runtime.settings, runtime.ledger)
    return run.to_dict()


def anomalies(runtime: Runtime) -> dict[str, Any]:
    from mailveil.detect.jobs import file_anomalies

    with session_scope(runtime.session_factory) as s:
        filed, days = file_anomalies(s, runtime.settings, runtime.ledger)
    return {"signals": filed, "employee_days": days}


def checkpoint(runtime: Runtime) -> dict[str, Any]:
    """What the API's checkpoint loop does: record lapsed reveals, sign a checkpoint if
    entries arrived, have the witnesses cosign it."""
    from mailveil.access.reveals import expire_reveals
    from mailveil.witness.publish import publish_latest

    with session_scope(runtime.session_factory) as s:
        expire_reveals(s, ledger=runtime.ledger)
    with session_scope(runtime.session_factory) as s:
        cp = runtime.ledger.checkpoint_now(s, only_if_new=True)
        size = getattr(cp, "size", None)
    report = publish_latest(
        runtime.session_factory, runtime.settings, runtime.ledger, sign_new=False
    )
    return {"checkpoint": size, "cosigned": report.cosigned}


def reports(runtime: Runtime) -> dict[str, Any]:
    """Store spooled abuse reports and re-check the pending ones (``reports recheck``)."""
    from mailveil.detect.reports import verp_key_of
    from mailveil.relay.abuse_intake import Kit, process_spool
    from mailveil.relay.sender_auth import resolver_for

    kit = Kit(runtime.settings, runtime.ledger, runtime.vault, None)
    kit.verp_key = verp_key_of(runtime.settings)
    run = process_spool(runtime.session_factory, kit=kit, resolver=resolver_for(runtime.settings))
    out: dict[str, Any] = run.to_dict()
    return out


def sweep_idempotency(runtime: Runtime, now: datetime | None = None) -> dict[str, Any]:
    """Delete stored Idempotency-Key answers past their lifetime (a day)."""
    from mailveil.api.idempotency import TTL, IdempotencyRecord

    cutoff = (now or utcnow()) - TTL
    with session_scope(runtime.session_factory) as s:
        done = s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff))
        removed = int(getattr(done, "rowcount", 0) or 0)
    return {"removed": removed}


def schedule(settings: Settings) -> list[Job]:
    """The periodic jobs the settings turn on (an interval of 0 turns one off). Resuming
    lapsed sends is not here: it queues drive messages, see ``service``."""
    jobs: list[Job] = []
    for name, run, every in (
        ("detect", detect, settings.worker_detect_every_seconds),
        ("unconfirmed", unconfirmed, settings.worker_resume_every_seconds),
        ("checkpoint", checkpoint, settings.checkpoint_every_seconds),
        ("reports", reports, settings.worker_reports_every_seconds),
        ("sweep_idempotency", sweep_idempotency, settings.worker_sweep_every_seconds),
    ):
        if every > 0:
            jobs.append(Job(name, run, every_seconds=every))
    if settings.worker_anomaly_hour >= 0:
        jobs.append(Job("anomalies", anomalies, daily_hour=settings.worker_anomaly_hour))
    return jobs


def _with_retries(job: Job, runtime: Runtime) -> dict[str, Any]:
    """SQLite refuses a write in a transaction that read before another writer committed
    ("database is locked"); nothing was written, so the job is simply run again."""
    for _attempt in range(20):
        try:
            return job.run(runtime)
        except OperationalError as exc:
            if "locked" not in str(exc.orig):
                raise
            time.sleep(0.05)
    return job.run(runtime)


def run_job(runtime: Runtime, job: Job) -> dict[str, Any]:
    """Run one job, recording how it ended (never raising: the next slot tries again)."""
    try:
        result = _with_retries(job, runtime)
    except Exception as exc:
        log.error("worker: job %s failed (%s)", job.name, type(exc).__name__)
        with runtime.session_factory() as s:
            finished(s, job.name, f"failed: {type(exc).__name__}")
        return {"error": type(exc).__name__}
    with runtime.session_factory() as s:
        finished(s, job.name, "ok")
    log.info("worker: job %s done %s", job.name, result)
    return result


__all__ = [
    "Job",
    "anomalies",
    "checkpoint",
    "claim",
    "detect",
    "finished",
    "lapsed_sends",
    "reports",
    "run_job",
    "schedule",
    "sweep_idempotency",
    "unconfirmed",
]
