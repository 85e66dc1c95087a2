"""The worker's periodic jobs against a real database (SQLite and PostgreSQL): a slot is
claimed once however many schedulers ask, every job runs and records how it ended, and the
schedule follows the settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from notify_kit import NotifyEnv
from sqlalchemy import select

from mailveil.worker.jobs import claim, run_job, schedule
from mailveil.worker.models import WorkerJob


def test_a_slot_is_claimed_once_and_every_job_runs(notify_env: NotifyEnv) -> None:
    env = notify_env
    with env.session_factory() as s:
        assert claim(s, "detect", 7, "host-a:1") is True
        assert claim(s, "detect", 7, "host-b:2") is False  # the same slot, another host
        assert claim(s, "detect", 6, "host-b:2") is False  # an older slot, late
        assert claim(s, "detect", 8, "host-b:2") is True
        row = s.get(WorkerJob, "detect")
        assert row is not None and (row.slot, row.claimed_by) == (8, "host-b:2")
    settings = env.settings.with_overrides(
        worker_detect_every_seconds=60.0, worker_reports_every_seconds=60.0,
        worker_sweep_every_seconds=60.0, worker_resume_every_seconds=60.0,
        worker_anomaly_hour=4, checkpoint_every_seconds=60.0,
    )  # fmt: skip
    jobs = {j.name: j for j in schedule(settings)}
    assert set(jobs) == {"detect", "unconfirmed", "checkpoint", "reports", "sweep_idempotency",
                         "anomalies"}  # fmt: skip
    assert "reports" not in {j.name for j in schedule(
        settings.with_overrides(worker_reports_every_seconds=0.0))}  # fmt: skip
    noon = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert jobs["anomalies"].slot(noon) == jobs["anomalies"].slot(noon + timedelta(hours=11))
    assert jobs["detect"].slot(noon) + 1 == jobs["detect"].slot(noon + timedelta(seconds=60))
    for job in jobs.values():  # as the scheduler does: claim the slot, then run
        with env.session_factory() as s:
            assert claim(s, job.name, job.slot(datetime.now(UTC)), "test:1")
        result = run_job(env.runtime, job)
        assert "error" not in result, (job.name, result)
    with env.session_factory() as s:
        outcomes = dict(s.execute(select(WorkerJob.name, WorkerJob.outcome)).all())
    assert {n: outcomes.get(n) for n in jobs} == dict.fromkeys(jobs, "ok")
