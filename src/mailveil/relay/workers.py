"""Several relay processes on one listening socket (``relay_workers``, ``mailveil relay``).

The relay is CPU-bound Python (parsing, rewriting, signing): one process uses one core. The
parent binds the socket, forks ``workers`` children that each open their own database engine
and serve connections from the shared socket (the kernel hands each new connection to one of
them), and forwards SIGINT/SIGTERM to them. The processes share nothing else: every decision
reads the database, every write goes through the ledger's head-row lock, so they stay
stateless with respect to each other, as the design asks of relay processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

from mailveil.config import Settings
from mailveil.relay.server import (
    RelayServer,
    RelayStartError,
    listen_problem,
    serve_until_signalled,
)
from mailveil.runtime import Runtime

log = logging.getLogger("mailveil.relay")
BACKLOG = 1024


def listen(host: str, port: int) -> socket.socket:
    try:
        sock = socket.create_server((host, port), backlog=BACKLOG)
    except OSError as exc:
        raise RelayStartError(listen_problem(host, port, exc)) from exc
    sock.setblocking(False)
    return sock


def run_relay(
    settings: Settings,
    sock: socket.socket,
    ready: Callable[[], None] | None = None,
    *,
    metrics: bool = False,
) -> None:
    """One relay process on ``sock`` (a worker here, or ``mailveil serve``'s relay process),
    with its own database engine, until SIGINT or SIGTERM; ``metrics``: serve this process's
    registry on ``metrics_host:metrics_port``."""
    runtime = Runtime.open(settings)
    server = RelayServer.from_runtime(runtime, sock=sock)
    if metrics:
        from prometheus_client import start_http_server

        start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=runtime.metrics.registry
        )
    asyncio.run(serve_until_signalled(server, ready))


def _child(settings: Settings, sock: socket.socket) -> None:
    """A worker's whole life; never returns."""
    code = 0
    try:
        run_relay(settings, sock)
    except BaseException as exc:  # a worker must not fall back into the parent's code
        log.error("relay worker %s stopped: %s", os.getpid(), type(exc).__name__)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve_workers(settings: Settings, sock: socket.socket, workers: int) -> int:
    """Fork ``workers`` relay processes on ``sock`` and wait for them; the exit code is 0 when
    every worker stopped cleanly. Call it before this process opens any database connection
    (a connection must not be shared across fork)."""
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            _child(settings, sock)
        children.append(pid)
    sock.close()

    stopping = False

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    worst = 0
    try:
        alive = set(children)
        while alive:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries waitpid
                continue
            alive.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            worst = worst or (code if code > 0 else 0)
            if not stopping:
                # One worker died on its own: stop the rest, a half-staffed relay hides it.
                log.error("relay worker %s exited (%s); stopping the others", pid, code)
                forward(signal.SIGTERM, None)
                worst = worst or 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return worst


__all__ = ["listen", "run_relay", "serve_workers"]
