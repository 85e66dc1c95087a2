"""Spread the connections of a shared listening socket evenly over the relay's processes.

Why: every relay worker (``relay_workers``, ``mailveil relay --workers``) waits on the one
listening socket. When connections arrive the kernel wakes them all, and asyncio's accept loop
in whichever runs first takes every connection waiting (up to its backlog, 100). A client that
keeps a few long connections open -- a seller's MTA, the benchmark's eight -- then lands in one
process while the others idle: eight simultaneous connections split 8 : 0 in most bursts
between two processes, and two processes relayed no faster than one
(``benchmarks/relay.py --scale-out``).

So each worker publishes how many connections it holds (accepted and not yet closed) in memory
shared across fork, and takes a connection only while it holds no more than the least loaded
live worker: least connections, as a load balancer does. A worker that may not accept stops
watching the socket and looks again a little later; one whose event loop has not run for a
second (hung, or restarting after a crash: the supervisor gives the new process the same seat)
does not count, so the others never wait on it. Each worker writes only its own seat; a read of
another's may be a moment old, which costs at most one connection out of balance.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import socket
import time
from collections.abc import Callable
from multiprocessing.sharedctypes import RawArray
from typing import Any

log = logging.getLogger(__name__)

# A worker that has not beaten for this long is not live (hung, dead or restarting).
STALE_SECONDS = 1.0
BEAT_SECONDS = 0.25
# How soon a worker that may not accept looks again: a connection waits at most about this
# long for the least loaded worker before the balance is looked at again.
RECHECK_SECONDS = 0.01
# Out of file descriptors: stop accepting for a moment (asyncio does the same).
EXHAUSTED_PAUSE_SECONDS = 1.0


class ConnectionShare:
    """The seats of ``workers`` processes, in shared memory: make it before forking them."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a share needs at least one worker")
        self.workers = workers
        self._held: Any = RawArray(ctypes.c_long, workers)
        self._beat: Any = RawArray(ctypes.c_double, workers)

    def seat(self, index: int) -> Seat:
        if not 0 <= index < self.workers:
            raise IndexError(f"seat {index} of {self.workers}")
        return Seat(self, index)


class Seat:
    """One worker's place in a ``ConnectionShare``: it writes its own count and beat only."""

    def __init__(self, share: ConnectionShare, index: int) -> None:
        self.share = share
        self.index = index
        self.open = 0  # connections the SMTP protocol holds
        self.pending = 0  # accepted, not yet handed to the protocol
        self._seated = False

    def take(self) -> None:
        """This worker (re)starts: nothing held yet, live from now."""
        self.open = self.pending = 0
        self._seated = True
        self._publish()

    def leave(self) -> None:
        """This worker stops: the others no longer count it, nor wait for it while the
        connections it is closing are counted out."""
        self._seated = False
        self.share._held[self.index] = 0
        self.share._beat[self.index] = 0.0

    def set_open(self, count: int) -> None:
        self.open = count
        self._publish()

    def add_pending(self, delta: int) -> None:
        self.pending += delta
        self._publish()

    def beat(self) -> None:
        if self._seated:
            self.share._beat[self.index] = time.monotonic()

    def held(self) -> int:
        return self.open + self.pending

    def may_accept(self) -> bool:
        """Whether no live worker holds fewer connections than this one."""
        now = time.monotonic()
        self.beat()
        mine = self.held()
        held, beats = self.share._held, self.share._beat
        for other in range(self.share.workers):
            if other != self.index and now - beats[other] < STALE_SECONDS and held[other] < mine:
                return False
        return True

    def _publish(self) -> None:
        if self._seated:
            self.share._held[self.index] = self.held()
            self.share._beat[self.index] = time.monotonic()


class BalancedListener:
    """Accepts from ``sock`` one connection at a time, only while ``seat`` may, and hands each
    to ``protocol_factory`` (``loop.connect_accepted_socket``) as ``create_server`` would."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        seat: Seat,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.sock = sock
        self.factory = protocol_factory
        self.seat = seat
        self.loop = loop
        self._watching = False
        self._closed = False
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.seat.take()
        self._watch()
        self._beat()

    def close(self) -> None:
        self._closed = True
        self._unwatch()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.seat.leave()

    def _watch(self) -> None:
        if not self._watching and not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._readable)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self.loop.remove_reader(self.sock.fileno())
            self._watching = False

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        def run() -> None:
            self._timers.discard(timer)
            if not self._closed:
                callback()

        timer = self.loop.call_later(delay, run)
        self._timers.add(timer)

    def _beat(self) -> None:
        self.seat.beat()
        self._later(BEAT_SECONDS, self._beat)

    def _readable(self) -> None:
        if not self.seat.may_accept():
            self._unwatch()
            self._later(RECHECK_SECONDS, self._watch)
            return
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log.error("relay: cannot accept connections (%s)", errno.errorcode[exc.errno])
                self._unwatch()
                self._later(EXHAUSTED_PAUSE_SECONDS, self._watch)
                return
            raise
        conn.setblocking(False)
        self.seat.add_pending(1)
        task = self.loop.create_task(self._hand_over(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hand_over(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.factory, sock=conn)
        except Exception as exc:  # the peer went away before the protocol started
            log.warning("relay: accepted connection lost (%s)", type(exc).__name__)
            conn.close()
        finally:
            # The protocol's connection_made has counted it in ``open`` by now.
            self.seat.add_pending(-1)


__all__ = ["BalancedListener", "ConnectionShare", "Seat"]
