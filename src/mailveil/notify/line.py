"""A worker's SMTP line to the relay: one connection driven by a thread of its own, so one
group of recipients is on the wire while the worker records the group before it and prepares
the group after it (issue 17: strictly in turn, the relay idled while the worker prepared
and recorded, and the worker idled while the relay worked).

The line only sends what the worker hands it: groups already committed ``delivering``
(``worker._prepare``), one at a time, in order. While a group is on the line its claims are
renewed from the line's thread, in a session of its own (``transmit``'s ``hold``), so a
recipient whose claim was lost is never sent, as before. A session factory bound to one
Connection (tests rolled back through one) cannot serve two threads: the line then sends in
the caller's thread, in turn, with the caller's session.
"""

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
    """One authenticated SMTP connection to the relay (opened on first use), fed groups of
    (recipient, message bytes) in order; ``send`` returns at once with the group's
    ``Flight`` (threaded) or after sending it (in the caller's thread)."""

    def __init__(self, runtime: Runtime, token: str, worker: str, session: Session) -> None:
        self.runtime = runtime
        self.token = token
        self._client: smtplib.SMTP | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._hold: Callable[[list[int]], set[int]]
        self._claims: _Claims | None = None
        if isinstance(session.get_bind(), Engine):
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="notify-smtp")
            self._claims = _Claims(runtime, worker)
            self._hold = self._claims
        else:
            lease = runtime.settings.notify_lease_seconds
            self._hold = lambda ids: renew_claims(session, ids, worker, lease)

    @property
    def threaded(self) -> bool:
        return self._pool is not None

    def send(self, wires: list[tuple[Ready, bytes]], renewed: float) -> Flight:
        """Hand the group over; ``renewed``: when its claims were last set or renewed
        (``time.monotonic()``)."""
        ready = [r for r, _ in wires]
        if self._pool is not None:
            return Flight(ready, self._pool.submit(self._run, wires, renewed))
        done: Future[Outcome] = Future()
        done.set_result(self._run(wires, renewed))
        return Flight(ready, done)

    def _run(self, wires: list[tuple[Ready, bytes]], renewed: float) -> Outcome:
        if self._client is None:
            try:
                self._client = connect(self.runtime, self.token)
            except (smtplib.SMTPException, OSError) as exc:
                # Not one byte of the group went out: all of it is sent again later.
                log.warning("notify: cannot reach the relay (%s)", type(exc).__name__)
                return Outcome(unsent={r.recipient_id for r, _ in wires}, broken=True)
        out = transmit(self._client, self.runtime, wires, self._hold, renewed)
        if out.broken:
            self._quit()
        return out

    def _quit(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()

    def close(self) -> None:
        """Quit the connection once the group on the line (if any) is done; let the thread
        and its session go."""
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._pool.submit(self._quit).result()
            self._pool.shutdown(wait=True)
        else:
            self._quit()
        if self._claims is not None:
            self._claims.close()


__all__ = ["Flight", "Line"]
