"""A small process supervisor (``mailveil serve``): fork children, restart the ones that die.

Each child is a ``Child``: a name ("api", "relay", "relay 2") and the function it runs in its
own process, which calls ``ready()`` once it serves. The supervisor

- forks every child and waits until each said ready; a child that dies or hangs before that
  is a start failure: the others are stopped and ``run`` returns 1 (``failed`` says which);
- forwards SIGINT and SIGTERM to the children as SIGTERM, waits for them (SIGKILL after
  ``stop_timeout``) and returns 0 when every child stopped cleanly;
- restarts a child that dies on its own, after a back-off that doubles from
  ``backoff_first`` up to ``backoff_max`` and starts over once a child stayed up for
  ``stable_after`` seconds; a restarted child that has not said ready within
  ``start_timeout`` is killed and counts as one more such death; after ``give_up_after``
  deaths in a row that did not stay up, it stops everything and returns 1. Every death and
  restart is logged.

Listening sockets are opened by the caller before ``run`` and inherited across fork, so a
restarted child serves on the same socket at once and connections that arrive meanwhile wait
in the kernel's backlog. Call ``run`` before this process opens database connections or
starts threads: a fork copies neither safely.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mailveil.logs import get_logger

log = get_logger("mailveil.serve")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Child:
    """What one child process runs: ``run(ready)`` returns (exit 0) or raises (exit 1).

    ``run`` starts with SIGINT and SIGTERM at their default action (the process ends at once,
    which counts as a clean stop). Code that takes them over must do it in one step, with a
    handler that honours a stop already noted: a stop can arrive at any moment, the
    supervisor's right after start too, and one that falls into a gap is lost (the
    supervisor then waits ``stop_timeout`` and kills the child)."""

    name: str
    run: Callable[[Callable[[], None]], None]
    # File descriptors this child must not keep (the other children's listening sockets).
    close_fds: Sequence[int] = ()


@dataclass
class _Running:
    child: Child
    pid: int = 0
    ready_fd: int = -1  # the read end of the child's ready pipe, -1 once read or closed
    ready_at: float | None = None
    started_at: float = 0.0
    failures: int = 0  # deaths in a row that did not stay up for stable_after
    restart_at: float | None = None
    code: int | None = None
    hung: bool = False  # killed for not saying ready within start_timeout

    def exit(self, start_timeout: float) -> str:
        if self.hung:
            return f"did not start within {start_timeout:.0f} s"
        return _described(self.code)


@dataclass
class Supervisor:
    children: Sequence[Child]
    backoff_first: float = 1.0
    backoff_max: float = 30.0
    stable_after: float = 60.0
    give_up_after: int = 10
    start_timeout: float = 120.0
    stop_timeout: float = 30.0
    failed: str = ""  # why run() returned 1, in words
    _running: list[_Running] = field(default_factory=list)
    _stopping: bool = False

    # ----------------------------------------------------------------------- the parent

    def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Start every child, call ``on_ready`` once all serve, supervise until a signal."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous = {s: signal.signal(s, self._on_stop) for s in _STOP_SIGNALS}
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda _s, _f: None)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        try:
            self._running = [_Running(child) for child in self.children]
            try:
                for entry in self._running:
                    self._fork(entry, wake_r, wake_w)
                if not self._start_all(wake_r):
                    return self._stop_all(wake_r, failed=True)
                if on_ready is not None and not self._stopping:
                    on_ready()
            except BaseException:  # a fork that failed, an on_ready that raised: none left
                self._stop_all(wake_r, failed=True)
                raise
            return self._supervise(wake_r, wake_w)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for entry in self._running:
                self._close_ready(entry)
            os.close(wake_r)
            os.close(wake_w)

    def _on_stop(self, _sig: int, _frame: object) -> None:
        self._stopping = True  # the loop notices (the wakeup fd wakes it)

    def _fork(self, entry: _Running, wake_r: int, wake_w: int) -> None:
        if threading.active_count() > 1:  # a thread's locks would be copied mid-use
            log.warning("serve_fork_with_threads", threads=threading.active_count())
        sys.stdout.flush()  # or the child would print what is still buffered again
        sys.stderr.flush()
        ready_r, ready_w = os.pipe()
        me = os.getpid()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {*_STOP_SIGNALS, signal.SIGCHLD})
        try:
            pid = os.fork()
        except BaseException:  # EAGAIN, ENOMEM: no child; the parent's signals unblocked
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(ready_r)
            os.close(ready_w)
            raise
        if pid == 0:  # pragma: no cover - runs in the child (covered by the process tests)
            os.close(ready_r)
            for other in self._running:
                if other.ready_fd >= 0:
                    os.close(other.ready_fd)
            _child_main(entry.child, ready_w, (wake_r, wake_w), blocked, me)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(ready_w)
        entry.pid, entry.ready_fd, entry.started_at = pid, ready_r, time.monotonic()
        entry.ready_at, entry.code, entry.restart_at, entry.hung = None, None, None, False
        log.info("serve_child_started", process=entry.child.name, pid=pid)

    def _close_ready(self, entry: _Running) -> None:
        if entry.ready_fd >= 0:
            os.close(entry.ready_fd)
            entry.ready_fd = -1

    def _read_ready(self, readable: Sequence[int]) -> None:
        for entry in self._running:
            if entry.ready_fd in readable:
                with contextlib.suppress(BlockingIOError):
                    said = os.read(entry.ready_fd, 1)
                    if said:
                        entry.ready_at = time.monotonic()
                        log.info("serve_child_ready", process=entry.child.name, pid=entry.pid)
                    self._close_ready(entry)  # EOF: it died before ready (reaped below)

    def _wait(self, wake_r: int, timeout: float) -> None:
        fds = [wake_r, *(e.ready_fd for e in self._running if e.ready_fd >= 0)]
        readable, _, _ = select.select(fds, [], [], max(0.0, timeout))
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
        self._read_ready(readable)

    def _reap(self) -> list[_Running]:
        """Children that exited since the last call (their ``code`` set)."""
        died = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            for entry in self._running:
                if entry.pid == pid:
                    entry.code = os.waitstatus_to_exitcode(status)
                    entry.pid = 0
                    self._close_ready(entry)
                    died.append(entry)
        return died

    def _start_all(self, wake_r: int) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while not all(e.ready_at is not None for e in self._running):
            if self._stopping:
                return True  # stopped while starting: a clean stop, not a failure
            for entry in self._reap():
                self.failed = (
                    f"the {entry.child.name} process could not start "
                    f"({_described(entry.code)}; its log lines are above)"
                )
                return False
            if time.monotonic() > deadline:
                slow = [e.child.name for e in self._running if e.ready_at is None]
                self.failed = (
                    f"the {', '.join(slow)} process(es) did not start within "
                    f"{self.start_timeout:.0f} s"
                )
                return False
            self._wait(wake_r, min(1.0, deadline - time.monotonic()))
        return True

    def _supervise(self, wake_r: int, wake_w: int) -> int:
        while not self._stopping:
            now = time.monotonic()
            for entry in self._reap():
                if self._stopping:
                    break
                if not self._schedule_restart(entry, now):
                    return self._stop_all(wake_r, failed=True)
            if self._stopping:
                break
            self._kill_hung(now)
            for entry in self._running:
                if entry.restart_at is not None and entry.restart_at <= now:
                    self._fork(entry, wake_r, wake_w)
            self._wait(wake_r, self._next_due() - time.monotonic())
        return self._stop_all(wake_r, failed=False)

    def _schedule_restart(self, entry: _Running, now: float) -> bool:
        """A child died on its own: its restart is due after the back-off; False when it
        died ``give_up_after`` times in a row."""
        up = (entry.ready_at is not None) and now - entry.ready_at >= self.stable_after
        entry.failures = 1 if up else entry.failures + 1
        why = entry.exit(self.start_timeout)
        if entry.failures >= self.give_up_after:
            self.failed = (
                f"the {entry.child.name} process died {entry.failures} times in a row "
                f"({why}); giving up"
            )
            log.error("serve_child_given_up", process=entry.child.name, code=entry.code)
            return False
        delay = min(self.backoff_first * 2 ** (entry.failures - 1), self.backoff_max)
        entry.restart_at = now + delay
        log.error("serve_child_died", process=entry.child.name, code=entry.code, exit=why,
                  restart_in_seconds=delay)  # fmt: skip
        return True

    def _kill_hung(self, now: float) -> None:
        """A restarted child that has not said ready within ``start_timeout`` (stuck on a
        database that does not answer, say) serves nobody: kill it; reaped, it counts as a
        failed start (back-off, ``give_up_after``). The first start has ``_start_all``."""
        for entry in self._running:
            late = now - entry.started_at > self.start_timeout
            if entry.pid and entry.ready_at is None and late and not entry.hung:
                log.error("serve_child_start_timed_out", process=entry.child.name,
                          pid=entry.pid, start_timeout=self.start_timeout)  # fmt: skip
                entry.hung = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(entry.pid, signal.SIGKILL)

    def _next_due(self) -> float:
        """When the loop has something to do without a signal: a restart, a start timeout."""
        due = [time.monotonic() + 60.0]
        for entry in self._running:
            if entry.restart_at is not None:
                due.append(entry.restart_at)
            elif entry.pid and entry.ready_at is None and not entry.hung:
                due.append(entry.started_at + self.start_timeout)
        return min(due)

    def _stop_all(self, wake_r: int, *, failed: bool) -> int:
        """SIGTERM to every live child, SIGKILL after ``stop_timeout``; 0 when all stopped
        cleanly (and nothing ``failed`` before)."""
        self._stopping = True
        alive = [e for e in self._running if e.pid]
        for entry in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(entry.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        worst = 1 if failed else 0
        killed = False
        while any(e.pid for e in self._running):
            for entry in self._reap():
                if entry.code not in (0, -signal.SIGTERM, -signal.SIGINT):
                    log.error("serve_child_stopped_badly", process=entry.child.name,
                              exit=_described(entry.code))  # fmt: skip
                    worst = 1
            if time.monotonic() > deadline and not killed:
                for entry in self._running:
                    if entry.pid:
                        log.error("serve_child_killed", process=entry.child.name, pid=entry.pid)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(entry.pid, signal.SIGKILL)
                killed, worst = True, 1
            if any(e.pid for e in self._running):
                self._wait(wake_r, 0.5)
        log.info("serve_stopped", failed=bool(worst))
        return worst


def _described(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _child_main(
    child: Child,
    ready_w: int,
    parent_fds: Sequence[int],
    mask: set[int | signal.Signals],
    parent: int,
) -> None:  # pragma: no cover - runs in the child process
    """A child's whole life after fork; never returns."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        for sig in (*_STOP_SIGNALS, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in (*parent_fds, *child.close_fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        _die_with_parent(parent)

        def ready() -> None:
            nonlocal ready_w
            if ready_w >= 0:
                os.write(ready_w, b"1")
                os.close(ready_w)
                ready_w = -1

        child.run(ready)
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # a child must never fall back into the parent's code
        trace = not isinstance(exc, KeyboardInterrupt)
        log.error("serve_child_failed", process=child.name, error=type(exc).__name__,
                  detail=str(exc)[:500], exc_info=trace)  # fmt: skip
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child process
    """Linux: this child gets SIGTERM when the supervisor dies (a SIGKILLed supervisor must
    not leave its children serving on ports nobody watches)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the supervisor died between fork and prctl
        os._exit(1)


__all__ = ["Child", "Supervisor"]
