"""The supervisor when the system refuses a fork (EAGAIN: too many processes, which cannot be
made to happen to root here, so ``os.fork`` is made to refuse the second child): the child
already started is stopped, the error reaches the caller, and the parent's stop signals are
not left blocked."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable

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
