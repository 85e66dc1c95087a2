"""Several relay processes on one listening socket (``relay_workers``, ``mailveil relay``).

The relay is CPU-bound Python (parsing, rewriting, signing): one process uses one core. The
parent binds the socket and runs ``workers`` children under ``mailveil.supervise`` (the one
way mailveil runs and restarts processes): each opens its own database engine and serves
connections from the shared socket, each taking new connections only while no other holds
fewer (``relay.balance``: left to the kernel and asyncio, one process took them all);
the supervisor passes SIGINT/SIGTERM on and restarts a process that dies. The processes
share nothing else: every decision reads the database, every write goes through the ledger's
head-row lock, so they stay stateless with respect to each other, as the design asks of
relay processes.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence

from mailveil.config import Settings
from mailveil.relay.balance import ConnectionShare, Seat
from mailveil.relay.server import (
    RelayServer,
    RelayStartError,
    listen_problem,
    serve_until_signalled,
)
from mailveil.runtime import Runtime
from mailveil.supervise import Child, Supervisor

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
    seat: Seat | None = None,
) -> None:
    """One relay process on ``sock`` (a worker here, or ``mailveil serve``'s relay process),
    with its own database engine, until SIGINT or SIGTERM; ``metrics``: serve this process's
    registry on ``metrics_host:metrics_port``; ``seat``: its place among the processes
    sharing ``sock`` (``relay.balance``: connections spread evenly over them)."""
    runtime = Runtime.open(settings)
    server = RelayServer.from_runtime(runtime, sock=sock, seat=seat)
    if metrics:
        from prometheus_client import start_http_server

        start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=runtime.metrics.registry
        )
    asyncio.run(serve_until_signalled(server, ready))


def relay_child(
    settings: Settings,
    sock: socket.socket,
    name: str,
    *,
    metrics: bool = False,
    close_fds: Sequence[int] = (),
    seat: Seat | None = None,
) -> Child:
    """One relay process on ``sock`` for the supervisor (``mailveil relay --workers``,
    ``mailveil serve``); a restarted process takes the same ``seat``."""

    def run(ready: Callable[[], None]) -> None:
        run_relay(settings, sock, ready, metrics=metrics, seat=seat)

    return Child(name, run, close_fds=close_fds)


def relay_seats(workers: int) -> list[Seat | None]:
    """One seat per relay process sharing a socket (none for a lone process, which has no
    one to share with); made before the processes are forked."""
    if workers == 1:
        return [None]
    share = ConnectionShare(workers)
    return [share.seat(i) for i in range(workers)]


def serve_workers(
    settings: Settings,
    sock: socket.socket,
    workers: int,
    on_ready: Callable[[], None] | None = None,
) -> tuple[int, str]:
    """``workers`` relay processes on ``sock`` ("relay", "relay 2", ...) under the
    supervisor, which restarts one that dies, until SIGINT or SIGTERM; ``on_ready`` once all
    serve. Returns the exit code (0 when every process stopped cleanly) and, when it is 1,
    why in words. Call it before this process opens any database connection (a connection
    must not be shared across fork); ``sock`` stays open here for restarts and is closed on
    return."""
    names = ["relay", *(f"relay {n}" for n in range(2, workers + 1))]
    seats = relay_seats(workers)
    supervisor = Supervisor(
        [relay_child(settings, sock, name, seat=seats[i]) for i, name in enumerate(names)]
    )
    try:
        code = supervisor.run(on_ready=on_ready)
    finally:
        sock.close()
    return code, supervisor.failed


__all__ = ["listen", "relay_child", "relay_seats", "run_relay", "serve_workers"]
