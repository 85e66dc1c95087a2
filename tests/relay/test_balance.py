"""relay.balance: processes sharing a listening socket take connections least-loaded first.

The seats live in memory shared across fork, so the fork tests run real processes, each with
its own event loop and ``BalancedListener`` on the one socket, and real TCP clients."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mailveil.relay import balance
from mailveil.relay.balance import BalancedListener, ConnectionShare


def test_a_seat_may_accept_only_while_no_live_worker_holds_fewer() -> None:
    share = ConnectionShare(3)
    first, second, third = (share.seat(i) for i in range(3))
    for seat in (first, second, third):
        seat.take()
    assert first.may_accept() and second.may_accept() and third.may_accept()
    first.set_open(2)
    second.set_open(1)
    assert not first.may_accept()  # the others hold fewer
    assert not second.may_accept()  # the third holds none
    assert third.may_accept()
    third.add_pending(1)  # accepted, not yet handed to the protocol: counts already
    assert third.may_accept() and second.may_accept() and not first.may_accept()


def test_a_worker_that_left_or_stopped_beating_is_not_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    share = ConnectionShare(2)
    busy, idle = share.seat(0), share.seat(1)
    busy.take()
    idle.take()
    busy.set_open(5)
    assert not busy.may_accept()
    idle.leave()
    assert busy.may_accept()  # the other stopped: nothing to wait for
    idle.set_open(0)  # a stopping worker counting out the connections it closes
    assert busy.may_accept()
    idle.take()
    assert not busy.may_accept()
    # A worker whose loop has not run for STALE_SECONDS (hung, or killed and not yet
    # restarted) is not counted: the others do not wait on it.
    later = time.monotonic() + balance.STALE_SECONDS + 0.5
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert busy.may_accept()


def test_seats_are_checked() -> None:
    with pytest.raises(ValueError):
        ConnectionShare(0)
    with pytest.raises(IndexError):
        ConnectionShare(2).seat(2)


class _Hold(asyncio.Protocol):
    """Says which process took the connection and keeps it open until the client closes."""

    def __init__(self, seat: balance.Seat) -> None:
        self.seat = seat

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.seat.set_open(self.seat.open + 1)
        transport.write(f"{os.getpid()}\n".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.seat.set_open(self.seat.open - 1)


def _worker(sock: socket.socket, seat: balance.Seat, stop: object, stall: float) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        if stall:  # a worker whose loop is busy at first (a long message): others go on
            seat.take()
            time.sleep(stall)
        listener = BalancedListener(sock, lambda: _Hold(seat), seat, loop)
        listener.start()
        while not stop.is_set():  # type: ignore[attr-defined]
            await asyncio.sleep(0.02)
        listener.close()

    asyncio.run(main())


@contextmanager
def _workers(count: int, stall: dict[int, float] | None = None) -> Iterator[int]:
    """``count`` processes, each a BalancedListener on one shared socket; yields its port."""
    context = multiprocessing.get_context("fork")
    sock = socket.create_server(("127.0.0.1", 0), backlog=128)
    sock.setblocking(False)
    share = ConnectionShare(count)
    stop = context.Event()
    procs = [
        context.Process(target=_worker, args=(sock, share.seat(i), stop, (stall or {}).get(i, 0)))
        for i in range(count)
    ]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + 10
    while any(share._beat[i] == 0.0 for i in range(count)) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        sock.close()


async def _connect_all(port: int, count: int) -> tuple[list[str], list[asyncio.StreamWriter]]:
    async def one() -> tuple[str, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        line = await asyncio.wait_for(reader.readline(), 10)
        return line.decode().strip(), writer

    done = await asyncio.gather(*(one() for _ in range(count)))
    return [pid for pid, _ in done], [writer for _, writer in done]


def _taken(port: int, count: int) -> Counter[str]:
    async def run() -> list[str]:
        pids, writers = await _connect_all(port, count)
        for writer in writers:
            writer.close()
        return pids

    return Counter(asyncio.run(run()))


def test_a_burst_of_connections_is_spread_evenly_over_the_processes() -> None:
    """Eight connections at once over two processes: 4 and 4 (left to the kernel and asyncio,
    the first process to wake took all eight in most bursts)."""
    with _workers(2) as port:
        for _ in range(3):
            split = _taken(port, 8)
            assert sorted(split.values()) == [4, 4], split
            time.sleep(0.2)  # the closed connections are counted out


def test_new_connections_go_to_the_process_holding_fewest() -> None:
    with _workers(3) as port:

        async def run() -> tuple[Counter[str], Counter[str]]:
            first, writers = await _connect_all(port, 6)  # 2 / 2 / 2
            whose = Counter(first)
            one = next(iter(whose))
            for pid, writer in zip(first, writers, strict=True):
                if pid == one:
                    writer.close()  # one process drops to none
            await asyncio.sleep(0.2)
            second, more = await _connect_all(port, 2)
            for writer in writers + more:
                writer.close()
            return whose, Counter(second)

        whose, second = asyncio.run(run())
    assert sorted(whose.values()) == [2, 2, 2], whose
    assert second == Counter({next(iter(whose)): 2}), (whose, second)


def test_a_process_whose_loop_is_held_up_does_not_stop_the_others() -> None:
    """The second process takes its seat, then blocks its loop longer than STALE_SECONDS: the
    first stops waiting for it and takes every connection meanwhile."""
    with _workers(2, stall={1: balance.STALE_SECONDS + 2.5}) as port:
        time.sleep(balance.STALE_SECONDS + 0.2)
        start = time.monotonic()
        split = _taken(port, 4)
        took = time.monotonic() - start
    assert len(split) == 1 and sum(split.values()) == 4, split
    assert took < 1.0, took
