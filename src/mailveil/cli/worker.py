"""`mailveil worker`: consume send steps and periodic jobs from ``notify_broker_url``."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import typer

from mailveil.cli.common import friendly_errors, say


def worker_command(
    ctx: typer.Context,
    threads: Annotated[
        int | None, typer.Option(help="Dramatiq threads (default worker_threads)", min=1)
    ] = None,
    scheduler: Annotated[
        bool,
        typer.Option(
            "--scheduler/--no-scheduler",
            help="also run the periodic jobs' scheduler (safe on every host: each slot runs once)",
        ),
    ] = True,
) -> None:
    """Run send steps and periodic jobs (detection, the daily anomaly job, checkpoints and
    witnesses, abuse-report re-checks, idempotency sweeps, resuming sends whose worker died)
    from the Redis or RabbitMQ broker `notify_broker_url` names. Start one per host or more;
    stops cleanly on SIGTERM or Ctrl-C."""
    from mailveil.logs import configure_logging
    from mailveil.runtime import Runtime
    from mailveil.worker.service import WorkerService

    settings = ctx.obj.settings()
    stop = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        stop.set()

    with friendly_errors():
        configure_logging(settings)
        service = WorkerService(Runtime.open(settings), threads=threads, scheduler=scheduler)
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        say(f"mailveil worker {service.name} on {_shown(settings.notify_broker_url)} "
            f"({service.threads} threads, scheduler {'on' if scheduler else 'off'})",
            markup=False)  # fmt: skip
        service.run(stop)
    say("mailveil worker stopped", markup=False)


def _shown(url: str) -> str:
    """The broker URL without its password (it goes to a terminal and logs)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


__all__ = ["worker_command"]
