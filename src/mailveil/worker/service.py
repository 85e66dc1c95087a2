"""A ``mailveil worker`` process: a Dramatiq worker on ``notify_broker_url`` (Redis or
RabbitMQ) consuming send steps and periodic jobs, and an APScheduler that claims each job's
slot and queues it. Any number of these processes, on any number of hosts, share the work:
a send's lease keeps one chain of messages on it, a job's slot is claimed once
(``jobs.claim``)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC
from typing import Any

from mailveil.db.base import utcnow
from mailveil.errors import InvalidInput
from mailveil.notify.queue import declare_actor, dramatiq_broker, worker_name
from mailveil.runtime import Runtime
from mailveil.worker.jobs import Job, claim, lapsed_sends, run_job, schedule

log = logging.getLogger("mailveil.worker")
JOB_ACTOR = "mailveil_job"
RESUME = "resume_sends"
# An idle worker asks the broker for messages at most this far apart (Dramatiq's default is
# 1 s, backing off from 5 ms): a stage's helpers are queued one by one as the stage runs
# and the busy worker, polling fast, took them all while idle hosts slept (issue 17).
IDLE_POLL_MS = 100


def declare_job_actor(broker: Any, runtime: Runtime, jobs: list[Job], *, queue_name: str) -> Any:
    import dramatiq

    by_name = {j.name: j for j in jobs}

    def run(name: str) -> None:
        job = by_name.get(name)
        if job is not None:  # a job this process's settings turned off: dropped
            run_job(runtime, job)

    return dramatiq.actor(
        actor_name=JOB_ACTOR, queue_name=queue_name, broker=broker, max_retries=0,
        time_limit=3_600_000,
    )(run)  # fmt: skip


class WorkerService:
    """Start with ``start()``, stop with ``stop()`` (or ``run(stop_event)`` to block)."""

    def __init__(
        self, runtime: Runtime, *, threads: int | None = None, scheduler: bool = True,
    ) -> None:  # fmt: skip
        settings = runtime.settings
        if not settings.notify_broker_url:
            raise InvalidInput(
                "mailveil worker needs a broker: set notify_broker_url (redis://... or "
                "amqp://...); without one, sends run in the API process"
            )
        self.runtime = runtime
        self.name = worker_name()
        self.threads = threads or settings.worker_threads
        self.with_scheduler = scheduler
        self.queue_name = settings.worker_queue
        self.jobs = schedule(settings)
        self.broker: Any = None
        self.drive: Any = None
        self.job_actor: Any = None
        self._worker: Any = None
        self._scheduler: Any = None

    def start(self) -> None:
        from dramatiq import Worker

        self.broker = dramatiq_broker(self.runtime.settings)
        self.drive = declare_actor(self.broker, lambda: self.runtime, queue_name=self.queue_name)
        self.job_actor = declare_job_actor(
            self.broker, self.runtime, self.jobs, queue_name=self.queue_name
        )
        self._worker = Worker(self.broker, worker_threads=self.threads, worker_timeout=IDLE_POLL_MS)
        # Take no more messages than there are threads to run them (Dramatiq's default is
        # twice as many): a stage's helpers then spread over every host's free threads
        # instead of waiting in one busy worker's prefetch (``notify.assist``).
        self._worker.queue_prefetch = self.threads
        self._worker.start()
        if self.with_scheduler:
            self._start_scheduler()
        log.info("worker: %s started (%d threads, scheduler %s)", self.name, self.threads,
                 "on" if self.with_scheduler else "off")  # fmt: skip

    def _start_scheduler(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        # APScheduler logs every tick at INFO; the jobs log what they did themselves.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        sched = BackgroundScheduler(timezone=UTC)
        every = self.runtime.settings.worker_resume_every_seconds
        if every > 0:
            sched.add_job(self.resume_tick, IntervalTrigger(seconds=every), id=RESUME,
                          max_instances=1, coalesce=True, next_run_time=utcnow())  # fmt: skip
        for job in self.jobs:
            if job.daily_hour is not None:
                trigger: Any = CronTrigger(hour=job.daily_hour, timezone=UTC)
            else:
                # Ticks twice a slot: whichever scheduler ticks first in a slot claims it.
                trigger = IntervalTrigger(seconds=max(job.every_seconds / 2, 0.5))
            sched.add_job(self.job_tick, trigger, args=(job,), id=job.name, max_instances=1,
                          coalesce=True)  # fmt: skip
        sched.start()
        self._scheduler = sched

    def resume_tick(self) -> list[int]:
        """Queue a new chain for every running send whose worker died (its lease lapsed)."""
        every = self.runtime.settings.worker_resume_every_seconds
        slot = Job(RESUME, lambda _r: {}, every_seconds=every).slot(utcnow())
        try:
            with self.runtime.session_factory() as s:
                if not claim(s, RESUME, slot, self.name):
                    return []
                ids = lapsed_sends(s)
        except Exception as exc:  # the database is away: the next tick tries again
            log.error("worker: resume check failed (%s)", type(exc).__name__)
            return []
        for send_id in ids:
            log.info("worker: send %s has no live worker; driving it again", send_id)
            self.drive.send(send_id, worker_name())
        return ids

    def job_tick(self, job: Job) -> bool:
        try:
            with self.runtime.session_factory() as s:
                if not claim(s, job.name, job.slot(utcnow()), self.name):
                    return False
        except Exception as exc:
            log.error("worker: job %s not claimed (%s)", job.name, type(exc).__name__)
            return False
        self.job_actor.send(job.name)
        return True

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        if self.broker is not None:
            self.broker.close()

    def run(self, stop: threading.Event) -> None:
        self.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.stop()


__all__ = ["JOB_ACTOR", "WorkerService", "declare_job_actor"]
