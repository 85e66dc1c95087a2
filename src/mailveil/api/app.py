"""The FastAPI application factory. Built by ``mailveil serve`` (or a test) from a Runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import structlog
from fastapi import FastAPI

from mailveil import __version__
from mailveil.access.reveals import expire_reveals
from mailveil.api.database import install_database_handlers, write_session_factory
from mailveil.api.docs import install_docs
from mailveil.api.limits import BodySizeLimit
from mailveil.api.metrics import MetricsMiddleware
from mailveil.api.openapi import install_exact_openapi
from mailveil.api.problems import install_problem_handlers
from mailveil.api.routers import (
    aliases,
    api_keys,
    customers,
    detect,
    disclosures,
    employee_access,
    health,
    incident_report,
    incident_response,
    ledger,
    notify_facts,
    notify_sends,
    notify_templates,
    platform,
    principals,
    relationships,
    reveals,
)
from mailveil.console.app import create_console
from mailveil.db.session import session_scope
from mailveil.ledger.counting import count_ledger_commits
from mailveil.notify.queue import Dispatcher
from mailveil.ops.alerts import pump
from mailveil.platform.events import push_once, webhook_client
from mailveil.runtime import Runtime
from mailveil.witness.publish import publish_latest

DESCRIPTION = """The customer-contact firewall for online marketplaces.

Every error is an RFC 9457 problem (`application/problem+json`). Authenticate with
`Authorization: Bearer <api key>`. POSTs accept an `Idempotency-Key` header. Lists are paged
with `?limit=` and `?after=` (the `next` value of the previous page)."""


async def _checkpoint_loop(runtime: Runtime) -> None:
    """Signs a checkpoint every T seconds so a quiet ledger still gets fresh signed roots."""
    log = structlog.get_logger("mailveil.ledger")
    interval = runtime.settings.checkpoint_every_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(_checkpoint_once, runtime)
        except Exception as exc:  # keep the loop alive; the next tick retries
            log.error("checkpoint_failed", error_type=type(exc).__name__)


def _checkpoint_once(runtime: Runtime) -> None:
    # Also the place lapsed reveal requests and grants are recorded as expired (views check
    # the time themselves; this writes the expiry to the ledger).
    with session_scope(runtime.session_factory) as session:
        expire_reveals(session, ledger=runtime.ledger)
    with session_scope(runtime.session_factory) as session:
        runtime.ledger.checkpoint_now(session, only_if_new=True)
    # Witnesses cosign the newest checkpoint (a no-op without witnesses or when they have).
    publish_latest(runtime.session_factory, runtime.settings, runtime.ledger, sign_new=False)


async def _alert_loop(runtime: Runtime) -> None:
    """New alerts from the ledger and due retries, every ``alert_poll_seconds``."""
    log = structlog.get_logger("mailveil.alerts")
    settings = runtime.settings
    while True:
        try:
            await asyncio.to_thread(
                pump, runtime.session_factory, settings, metrics=runtime.metrics
            )
        except Exception as exc:  # keep the loop alive; the outbox keeps the alerts
            log.error("alert_pump_failed", error_type=type(exc).__name__)
        await asyncio.sleep(settings.alert_poll_seconds)


async def _events_loop(runtime: Runtime) -> None:
    """Pushes new message events to ``events_url`` (``platform.events``: signed, retried
    with backoff, the cursor moving only on the receiver's 2xx)."""
    log = structlog.get_logger("mailveil.events")
    settings = runtime.settings
    with webhook_client(settings) as client:
        while True:
            await asyncio.sleep(settings.events_push_seconds)
            try:
                await asyncio.to_thread(_push_events, runtime, client)
            except Exception as exc:  # keep the loop alive; the next tick retries
                log.error("events_push_failed", error_type=type(exc).__name__)


def _push_events(runtime: Runtime, client: httpx.Client) -> None:
    while True:
        with session_scope(runtime.session_factory) as session:
            result = push_once(session, runtime.settings, client)
        if result.error or result.waiting or result.sent == 0:
            return


def create_app(runtime: Runtime, *, background_checkpoints: bool = False) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[None]:
        tasks = []
        if background_checkpoints and runtime.settings.checkpoint_every_seconds > 0:
            tasks.append(asyncio.create_task(_checkpoint_loop(runtime)))
        if background_checkpoints and runtime.settings.alert_webhook_url:
            tasks.append(asyncio.create_task(_alert_loop(runtime)))
        if background_checkpoints and runtime.settings.events_url:
            tasks.append(asyncio.create_task(_events_loop(runtime)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # In-process sends stop between steps (a worker resumes them); joins wait.
            await asyncio.to_thread(served.state.notify_dispatcher.close)

    app = FastAPI(
        title="mailveil",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's pages load their scripts from a CDN; /docs is served from a package.
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.read_sessions = runtime.session_factory
    app.state.write_sessions = write_sessions = write_session_factory(runtime.session_factory)
    if write_sessions is not runtime.session_factory:
        # The ledger counter listens per factory: the writers' factory counts too.
        count_ledger_commits(write_sessions, runtime.metrics.ledger_appends)
    metrics = runtime.metrics
    app.state.metrics = metrics
    # One per process, built here (not on first use, where two requests could race) and
    # closed when the app shuts down; the console mounted below starts sends with it too.
    app.state.notify_dispatcher = Dispatcher(runtime)
    install_problem_handlers(app)
    install_database_handlers(app)
    install_exact_openapi(app, [customers.CustomerIn, disclosures.DisclosureIn])
    install_docs(app)
    for module in (
        health,
        api_keys,
        employee_access,  # before customers: /v1/customers/export
        customers,
        principals,
        relationships,
        disclosures,
        aliases,
        ledger,
        reveals,
        detect,
        incident_response,
        incident_report,
        notify_facts,
        notify_templates,
        notify_sends,
        platform,
    ):
        app.include_router(module.router)
    app.include_router(notify_sends.suppressions)
    app.include_router(notify_sends.unsubscribe)
    app.mount("/console", create_console(runtime, host_state=app.state))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(
        BodySizeLimit,
        json_limit=runtime.settings.max_json_body_bytes,
        bulk_limit=runtime.settings.max_body_bytes,
    )
    return app
