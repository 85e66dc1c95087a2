"""Running sends: in-process threads by default, Dramatiq on Redis or RabbitMQ when
``notify_broker_url`` names a broker. Nothing is built at import time: ``Dispatcher`` and
``dramatiq_broker`` build from settings when a process starts.

With a broker, a message is ``drive(send_id, chain)``; the actor calls ``worker.step`` and,
when the send must wait (a soak, another worker's lease, in-flight recipients), sends itself
again with that delay instead of sleeping, so any worker on any machine can take the next
step. ``chain`` names the chain of messages: it is the lease owner, so the chain's next
message takes the send back at once while another chain waits for the lease to lapse. A
chain whose worker died is replaced by ``mailveil worker``'s scheduler once its lease lapsed
(``worker.jobs.lapsed_sends``).

The chain is the send's coordinator. When a stage starts it queues ``assist(send_id)``: a
helper on whichever worker thread is free, on any host, that claims batches of the stage's
recipients beside it and queues one more helper when it found work (``notify.assist``), so
a stage spreads over every free thread of every ``mailveil worker`` (``notify_split_stages``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import OperationalError

from mailveil.config import Settings
from mailveil.notify.assist import assist
from mailveil.notify.worker import release, step
from mailveil.runtime import Runtime

log = logging.getLogger("mailveil.notify")
QUEUE = "mailveil_notify"
ACTOR = "mailveil_notify_drive"
ASSIST_ACTOR = "mailveil_notify_assist"


def worker_name() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def safe_step(
    runtime: Runtime, send_id: int, name: str, assist: Callable[[], None] | None = None
) -> float | None:
    """``step``, with a failed step turned into a wait (never raises: a worker keeps going)."""
    try:
        return step(runtime, send_id, name, assist)
    except OperationalError as exc:
        if "locked" not in str(exc.orig):
            log.error("notify: send %s step failed (%s)", send_id, type(exc).__name__)
            return 2.0
        # SQLite: another writer (the relay) committed after this transaction read;
        # nothing was written, the step is simply taken again at once.
        log.debug("notify: send %s step met a busy database; retrying", send_id)
        return 0.02
    except Exception as exc:  # a database or relay hiccup: try again shortly
        log.error("notify: send %s step failed (%s)", send_id, type(exc).__name__)
        return 2.0


def run_to_end(
    runtime: Runtime,
    send_id: int,
    *,
    worker: str | None = None,
    stop: threading.Event | None = None,
    sleep: Callable[[float], Any] = time.sleep,
) -> None:
    """Step the send until it is over (or ``stop`` is set), sleeping between steps."""
    name = worker or worker_name()
    while stop is None or not stop.is_set():
        wait = safe_step(runtime, send_id, name)
        if wait is None:
            return
        if stop is not None:
            stop.wait(wait)
        else:
            sleep(wait)
    # Stopped on purpose (Ctrl-C, the server shutting down): let the send go at once rather
    # than make the next worker wait for the lease to lapse.
    with contextlib.suppress(Exception):
        release(runtime, send_id, name)


class Dispatcher:
    """Starts sends: a thread per send in this process, or a Dramatiq message."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.threads: dict[int, threading.Thread] = {}
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._actor: Any = None
        if runtime.settings.notify_broker_url:
            self._actor = declare_actor(
                dramatiq_broker(runtime.settings),
                lambda: runtime,
                queue_name=runtime.settings.worker_queue,
            )

    def start(self, send_id: int) -> str:
        if self._actor is not None:
            self._actor.send(send_id, worker_name())
            return "queued"
        with self._lock:
            running = self.threads.get(send_id)
            if running is not None and running.is_alive():
                return "running"
            thread = threading.Thread(
                target=run_to_end,
                args=(self.runtime, send_id),
                kwargs={"stop": self.stop},
                name=f"notify-send-{send_id}",
                daemon=True,
            )
            self.threads[send_id] = thread
            thread.start()
        return "started"

    def close(self, timeout: float = 10.0) -> None:
        self.stop.set()
        for thread in list(self.threads.values()):
            thread.join(timeout)


def dramatiq_broker(settings: Settings) -> Any:
    """The broker ``notify_broker_url`` names (Redis or RabbitMQ)."""
    url = settings.notify_broker_url
    if url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url)  # type: ignore[no-untyped-call]
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    return RabbitmqBroker(url=url)


def declare_actor(
    broker: Any, runtime_of: Callable[[], Runtime], *, queue_name: str = QUEUE
) -> Any:
    """The ``drive`` actor on ``broker``; ``runtime_of`` gives this process's Runtime.
    ``queue_name``: another queue, so users of one broker (test runs, several installations)
    never take each other's messages (a message is only a send id)."""
    import dramatiq

    def drive(send_id: int, chain: str | None = None) -> None:
        chain = chain or worker_name()
        runtime = runtime_of()
        helpers = None
        if runtime.settings.notify_split_stages:
            helpers = lambda: helper.send(send_id)  # noqa: E731
        wait = safe_step(runtime, send_id, chain, helpers)
        if wait is not None:
            actor.send_with_options(args=(send_id, chain), delay=int(max(wait, 0.05) * 1000))

    def help_stage(send_id: int) -> None:
        name = worker_name()  # kept across retries: its own claims are taken back at once
        more: Any = lambda: helper.send(send_id)  # noqa: E731
        for _attempt in range(200):
            try:
                assist(runtime_of(), send_id, name, more)
                return
            except OperationalError as exc:
                if "locked" not in str(exc.orig):
                    break
                # SQLite: another writer committed after this transaction read; nothing
                # was written, the batch is simply taken again.
                more = None
                time.sleep(0.02)
            except Exception as exc:  # its claims lapse; the coordinator or another takes them
                log.error("notify: send %s helper failed (%s)", send_id, type(exc).__name__)
                return
        log.error("notify: send %s helper gave up; its claims lapse", send_id)

    helper: Any = dramatiq.actor(
        actor_name=ASSIST_ACTOR, queue_name=queue_name, broker=broker, max_retries=0,
        time_limit=3_600_000,
    )(help_stage)  # fmt: skip

    actor: Any = dramatiq.actor(
        actor_name=ACTOR,
        queue_name=queue_name,
        broker=broker,
        max_retries=20,
        min_backoff=500,
        max_backoff=30_000,
        time_limit=3_600_000,
    )(drive)
    return actor


__all__ = [
    "Dispatcher",
    "declare_actor",
    "dramatiq_broker",
    "run_to_end",
    "safe_step",
    "worker_name",
]
