"""The supervisor in-process, with children that are plain functions: a refused fork and a
restarted child that hangs before it says ready.

When the system refuses a fork (EAGAIN: too many processes, which cannot be made to happen
to root here, so ``os.fork`` is made to refuse the second child), the child already started
is stopped, the error reaches the caller, and the parent's stop signals are not left
blocked."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailveil.supervise import Child, Supervisor


def _serve(ready: Callable[[], None]) -> None:
    ready()
    while True:
        time.sleep(0.05)  # until the supervisor's SIGTERM


def test_a_refused_fork_stops_the_started_child_and_unblocks_signals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_fork = os.fork
    started: list[int] = []

    def fork() -> int:
        if started:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        pid = real_fork()
        if pid:
            started.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    supervisor = Supervisor([Child("first", _serve), Child("second", _serve)], stop_timeout=10)
    with pytest.raises(OSError) as refused:
        supervisor.run()
    assert refused.value.errno == errno.EAGAIN
    assert len(started) == 1
    with pytest.raises(ChildProcessError):  # reaped: stopped and waited for
        os.waitpid(started[0], os.WNOHANG)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    assert not blocked & {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}, blocked


def test_a_restarted_child_that_hangs_before_ready_is_killed_and_counted(tmp_path: Path) -> None:
    """A child serves, dies, and every restart hangs before it says ready: each restart is
    killed after start_timeout and counts as a death in a row, so the supervisor backs off
    and gives up after give_up_after (before the fix the first restart hung for good)."""
    runs = tmp_path / "runs"

    def flaky(ready: Callable[[], None]) -> None:
        with runs.open("a") as out:
            out.write(f"{os.getpid()} {time.monotonic()}\n")
        if len(runs.read_text().splitlines()) == 1:
            ready()
            time.sleep(0.2)
            raise SystemExit(1)  # the first run dies once serving
        while True:
            time.sleep(0.05)  # a restart never says ready

    supervisor = Supervisor(
        [Child("flaky", flaky)], start_timeout=1.0, backoff_first=0.1, give_up_after=3,
        stop_timeout=5,
    )  # fmt: skip
    # Without the fix nothing ends the run: a stop after 20 s makes it return 0, not 1.
    previous = signal.signal(signal.SIGALRM, lambda _s, _f: os.kill(os.getpid(), signal.SIGTERM))
    signal.setitimer(signal.ITIMER_REAL, 20)
    try:
        code = supervisor.run()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert code == 1
    assert supervisor.failed == (
        "the flaky process died 3 times in a row (did not start within 1 s); giving up"
    )
    started = [line.split() for line in runs.read_text().splitlines()]
    assert len(started) == 3
    at = [float(when) for _pid, when in started]
    # The start timeout, then the doubled back-off (0.2 s; less a margin for the two
    # children's own start, which a loaded machine can delay unequally).
    assert at[2] - at[1] >= 1.0 + 0.1
    for pid, _when in started:
        with pytest.raises(ChildProcessError):  # reaped
            os.waitpid(int(pid), os.WNOHANG)
