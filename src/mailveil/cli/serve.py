"""`mailveil serve`: the API and the SMTP relay.

By default a small supervisor (``mailveil.supervise``): the relay in its own process (or
``relay_workers`` processes sharing the port) and the API (uvicorn) in another, so a busy API
cannot take the event loop, the GIL or the database pool from the relay, whose latency is
what senders wait on (issue 16). The API's process also gives up ``api_nice`` points of
scheduling priority. ``--single-process`` keeps the former shape, both on one event loop
(small installs, debugging); ``--no-relay`` runs the API alone in this process.
"""

from __future__ import annotations

import importlib
import os
import socket
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mailveil.cli.common import fail, friendly_errors, say
from mailveil.cli.setup import initialise

if TYPE_CHECKING:
    from collections.abc import Callable

    from mailveil.config import Settings

API_BACKLOG = 2048  # uvicorn's default


def serve_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="API address")] = None,
    port: Annotated[int | None, typer.Option(help="API port", min=1, max=65535)] = None,
    relay: Annotated[
        bool, typer.Option("--relay/--no-relay", help="also run the SMTP relay")
    ] = True,
    relay_workers: Annotated[
        int | None, typer.Option(help="relay processes (default relay_workers)", min=1)
    ] = None,
    single_process: Annotated[
        bool,
        typer.Option(
            "--single-process",
            help="the API and the relay on one event loop in this process (small installs, "
            "debugging) instead of a process each under a supervisor",
        ),
    ] = False,
) -> None:
    """Run the API (127.0.0.1:8700 by default) and the SMTP relay (127.0.0.1:2525): a
    process each (the relay's `relay_workers` processes share its port) under a supervisor
    that restarts a process that dies and stops them all on SIGTERM or Ctrl-C."""
    settings = ctx.obj.settings()
    host = host if host is not None else settings.api_host
    port = port if port is not None else settings.api_port
    if single_process or not relay:
        _serve_in_one_process(settings, host, port, relay=relay)
        return
    workers = relay_workers if relay_workers is not None else settings.relay_workers
    raise typer.Exit(_supervise(settings, host, port, workers))


# ------------------------------------------------------------------ supervised (default)


def _supervise(settings: Settings, host: str, port: int, workers: int) -> int:
    from mailveil.logs import configure_logging
    from mailveil.relay.server import RelayServer
    from mailveil.relay.workers import listen, relay_child, relay_seats
    from mailveil.runtime import Runtime
    from mailveil.supervise import Child, Supervisor

    api_sock = _api_listen(host, port)
    with friendly_errors(init_hint=False):
        initialise(settings, issue_admin=False)
        configure_logging(settings)
        runtime = Runtime.open(settings)  # keys bound to this database, policies compile
        relay_sock = listen(settings.relay_host, settings.relay_port)
        RelayServer.from_runtime(runtime, sock=relay_sock)  # relay keys, TLS, policy settings
        runtime.engine.dispose()  # each child opens its own after fork
        for module in ("uvicorn", "mailveil.api.app", "mailveil.api.database"):
            # Loaded once here: every child, a restarted one too, starts with them in
            # memory (shared pages) instead of importing them again.
            importlib.import_module(module)
    relay_port = relay_sock.getsockname()[1]
    metrics = bool(settings.metrics_port) and workers == 1
    api = _api_process(settings, api_sock, host, port)
    children = [Child("api", api, close_fds=[relay_sock.fileno()])]
    for n, seat in enumerate(relay_seats(workers), start=1):
        name = "relay" if workers == 1 else f"relay {n}"
        children.append(
            relay_child(
                settings,
                relay_sock,
                name,
                metrics=metrics,
                close_fds=[api_sock.fileno()],
                seat=seat,
            )
        )

    def announce() -> None:
        say(f"mailveil API on http://{host}:{port} (OpenAPI at /openapi.json, docs at /docs)",
            markup=False)  # fmt: skip
        say(f"mailveil relay on {settings.relay_host}:{relay_port} (SMTP, {workers} "
            f"process(es)); API and relay in separate processes", markup=False)  # fmt: skip
        if metrics:
            say(f"relay metrics on http://{settings.metrics_host}:{settings.metrics_port}/",
                markup=False)  # fmt: skip
        elif settings.metrics_port:
            say("metrics_port is ignored with relay_workers > 1 (one registry per process)")

    supervisor = Supervisor(children)
    try:
        code = supervisor.run(on_ready=announce)
    finally:
        api_sock.close()
        relay_sock.close()
    if code and supervisor.failed:
        fail(supervisor.failed)
    return code


def _api_process(
    settings: Settings, sock: socket.socket, host: str, port: int
) -> Callable[[Callable[[], None]], None]:
    def run(ready: Callable[[], None]) -> None:
        import asyncio
        import signal

        import uvicorn

        from mailveil.api.app import create_app
        from mailveil.api.database import api_runtime
        from mailveil.runtime import Runtime

        if settings.api_nice:
            os.nice(settings.api_nice)  # the relay's processes get the CPU first
        runtime = Runtime.open(settings)
        app = create_app(api_runtime(runtime), background_checkpoints=True)
        server = uvicorn.Server(uvicorn.Config(app, **_uvicorn_options(settings, host, port)))
        # uvicorn's own handler from now on, not only once serve() runs: a stop that reaches
        # this process in between (the supervisor stopped right after it started) would else
        # be lost, and the supervisor would wait stop_timeout before killing it. Noted here,
        # it makes uvicorn shut down as soon as it has started. Until this line the default
        # action stops the process at once. uvicorn raises the signal again after shutting
        # down, under the handler it found: this one only notes it, so the process exits 0.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, server.handle_exit)

        async def main() -> None:
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not serving.done():
                await asyncio.sleep(0.05)
            if server.started:
                ready()
            await serving

        asyncio.run(main())
        if not server.started:
            raise SystemExit(3)  # uvicorn's own code for a failed start-up

    return run


# ------------------------------------------------------------------ --single-process


def _serve_in_one_process(settings: Settings, host: str, port: int, *, relay: bool) -> None:
    """The API and (``relay``) the relay on one event loop in this process."""
    import asyncio

    import uvicorn

    from mailveil.api.app import create_app
    from mailveil.api.database import api_runtime
    from mailveil.logs import configure_logging
    from mailveil.relay.server import RelayServer, serve_beside
    from mailveil.runtime import Runtime

    _api_listen(host, port).close()  # fail now, in words (uvicorn would log a bare errno)
    with friendly_errors(init_hint=False):
        initialise(settings, issue_admin=False)
        configure_logging(settings)
        runtime = Runtime.open(settings)
        # The API gets its own database pool: a burst of requests cannot starve the relay.
        api = create_app(api_runtime(runtime), background_checkpoints=True)
        relay_server = RelayServer.from_runtime(runtime) if relay else None
    options = _uvicorn_options(settings, host, port)
    say(
        f"mailveil API on http://{host}:{port} (OpenAPI at /openapi.json, docs at /docs)",
        markup=False,
    )
    if relay_server is None:
        uvicorn.run(api, **options)
        return
    say(f"mailveil relay on {relay_server.host}:{relay_server.port} (SMTP, one process with "
        "the API)", markup=False)  # fmt: skip
    config = uvicorn.Config(api, **options)
    with friendly_errors(init_hint=False):
        asyncio.run(serve_beside(relay_server, uvicorn.Server(config).serve()))


def _api_listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, opened here so that a port in use is one clear error and
    a restarted API process serves on it at once."""
    import errno

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=API_BACKLOG)
    except OSError as exc:
        why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = f" (port {port} is taken: stop the other server, or use --port or api_port)"
        fail(f"the API cannot listen on {host}:{port}: {why}{hint}")


def _uvicorn_options(settings: Settings, host: str, port: int) -> dict[str, Any]:
    # log_config=None: uvicorn keeps the logging configured above (JSON, scrubbed) instead of
    # installing its own plain-text handlers; its access log is off (the API logs requests).
    return {
        "host": host, "port": port, "log_level": settings.log_level, "access_log": False,
        "log_config": None,
    }  # fmt: skip
