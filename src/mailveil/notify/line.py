"""A worker's SMTP line to the relay: connections driven by threads of their own, so one
group of recipients is on the wire while the worker records the group before it and prepares
the group after it (issue 17: strictly in turn, the relay idled while the worker prepared
and recorded, and the worker idled while the relay worked). Each group is split between
``notify_relay_connections`` connections sent at once: one message at a time on one
connection left the relay waiting on each message's commit and smarthost round trip, which
its group commit shares between connections.

The line only sends what the worker hands it: groups already committed ``delivering``
(``worker._prepare``), one at a time, in order. While a group is on the line its claims are
renewed from the line's threads, each in a session of its own (``transmit``'s ``hold``), so
a recipient whose claim was lost is never sent, as before. A session factory bound to one
Connection (tests rolled back through one) cannot serve two threads: the line then sends in
the caller's thread, over one connection, in turn, with the caller's session."""

from __future__ import annotations

import contextlib
import logging
import smtplib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mailveil.notify.claims import renew_claims
from mailveil.notify.transmit import Outcome, Ready, connect, transmit
from mailveil.runtime import Runtime

log = logging.getLogger("mailveil.notify")


@dataclass
class Flight:
    """A group handed to the line: what went, and its outcome once the line is done."""

    ready: list[Ready]
    future: Future[Outcome]


class _Claims:
    """``hold`` for the line's thread: renews claims in a session of its own (a session is
    never shared between threads). Each call commits."""

    def __init__(self, runtime: Runtime, worker: str) -> None:
        self.runtime = runtime
        self.worker = worker
        self.session: Session | None = None

    def __call__(self, ids: list[int]) -> set[int]:
        if self.session is None:
            self.session = self.runtime.session_factory()
        try:
            return renew_claims(
                self.session, ids, self.worker, self.runtime.settings.notify_lease_seconds
            )
        except BaseException:
            self.session.rollback()
            raise

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


class Line:
    """``connections`` authenticated SMTP connections to the relay (each opened on first use),
    fed groups of (recipient, message bytes) in order, each group split between them;
    ``send`` returns at once with the group's ``Flight`` (threaded) or after sending it (in
    the caller's thread, over one connection)."""

    def __init__(
        self, runtime: Runtime, token: str, worker: str, session: Session, connections: int = 1
    ) -> None:
        self.runtime = runtime
        self.token = token
        self._clients: list[smtplib.SMTP | None] = [None] * max(connections, 1)
        self._pools: list[ThreadPoolExecutor] = []
        self._holds: list[Callable[[list[int]], set[int]]] = []
        self._claims: list[_Claims] = []
        if isinstance(session.get_bind(), Engine):
            for _ in self._clients:
                self._pools.append(ThreadPoolExecutor(1, thread_name_prefix="notify-smtp"))
                self._claims.append(_Claims(runtime, worker))
            self._holds = list(self._claims)
        else:
            lease = runtime.settings.notify_lease_seconds
            self._clients = [None]
            self._holds = [lambda ids: renew_claims(session, ids, worker, lease)]

    @property
    def threaded(self) -> bool:
        return bool(self._pools)

    def send(self, wires: list[tuple[Ready, bytes]], renewed: float) -> Flight:
        """Hand the group over; ``renewed``: when its claims were last set or renewed
        (``time.monotonic()``)."""
        ready = [r for r, _ in wires]
        if self._pools:
            return Flight(ready, self._pools[0].submit(self._split, wires, renewed))
        done: Future[Outcome] = Future()
        done.set_result(self._run(0, wires, renewed))
        return Flight(ready, done)

    def _split(self, wires: list[tuple[Ready, bytes]], renewed: float) -> Outcome:
        """(Line thread 0) Each connection its share of the group, at once; one outcome."""
        n = len(self._clients)
        others = [
            self._pools[i].submit(self._run, i, wires[i::n], renewed)
            for i in range(1, n)
            if wires[i::n]
        ]
        outs = [self._run(0, wires[0::n], renewed)] + [f.result() for f in others]
        merged = Outcome()
        for out in outs:
            merged.delivered.update(out.delivered)
            merged.failed.update(out.failed)
            merged.deferred |= out.deferred
            merged.unsent |= out.unsent
            merged.broken = merged.broken or out.broken
        return merged

    def _run(self, i: int, wires: list[tuple[Ready, bytes]], renewed: float) -> Outcome:
        client = self._clients[i]
        if client is None:
            try:
                client = self._clients[i] = connect(self.runtime, self.token)
            except (smtplib.SMTPException, OSError) as exc:
                # Not one byte of this share went out: all of it is sent again later.
                log.warning("notify: cannot reach the relay (%s)", type(exc).__name__)
                return Outcome(unsent={r.recipient_id for r, _ in wires}, broken=True)
        out = transmit(client, self.runtime, wires, self._holds[i], renewed)
        if out.broken:
            self._quit(i)
        return out

    def _quit(self, i: int) -> None:
        client, self._clients[i] = self._clients[i], None
        if client is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()

    def close(self) -> None:
        """Quit the connections once the group on the line (if any) is done; let the threads
        and their sessions go."""
        if self._pools:
            for i, pool in enumerate(self._pools):
                with contextlib.suppress(Exception):
                    pool.submit(self._quit, i).result()
            for pool in self._pools:
                pool.shutdown(wait=True)
        else:
            self._quit(0)
        for claims in self._claims:
            claims.close()


__all__ = ["Flight", "Line"]
