"""A private Postfix instance relaying into an in-process sink, for end-to-end relay tests and
the relay benchmark.

``PostfixInstance`` writes its own ``main.cf``/``master.cf`` into a fresh directory with its own
queue and data directories, listens on one free 127.0.0.1 port and relays everything it accepts
to ``[127.0.0.1]:<sink port>``: no local delivery, no DNS, nothing but loopback. The system's
own Postfix (``/etc/postfix``) is never read, configured or started.

``Sink`` is an aiosmtpd server in a thread that keeps every message it receives, so a test can
read exactly the bytes that crossed the last hop.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailveil.demo.harness import free_port

DAEMON_DIRECTORY = Path("/usr/lib/postfix/sbin")
LOOPBACK = "127.0.0.1"


def postfix_installed() -> bool:
    return shutil.which("postfix") is not None and (DAEMON_DIRECTORY / "master").exists()


def postfix_required() -> bool:
    """CI (or an explicit request) must run the Postfix tests, never skip them."""
    return (
        os.environ.get("CI", "").lower() == "true"
        or os.environ.get("MAILVEIL_REQUIRE_POSTFIX") == "1"
    )


def need(what: str, present: bool) -> None:
    """Skip (outside CI) or fail (in CI) when a Debian tool the test needs is missing."""
    import pytest

    if present:
        return
    reason = f"{what} is not installed (scripts/ensure-debian.sh installs it)"
    if postfix_required():
        pytest.fail(f"{reason}; CI / MAILVEIL_REQUIRE_POSTFIX=1 requires it")
    pytest.skip(reason)


def postfix_version() -> str:
    out = subprocess.run(
        ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


# ---------------------------------------------------------------------------------------- sink


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    peer: str
    at: float  # time.perf_counter() when the sink accepted it


@dataclass
class _SinkHandler:
    sink: Sink

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refuse = self.sink.refuse_rcpt
        reply = refuse(address) if refuse is not None else None
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self.sink._accept(session, envelope)


class Sink:
    """An SMTP server on a free loopback port that keeps what it receives.

    ``reply`` (settable at any time) makes it answer DATA with that line instead of accepting,
    and ``refuse_rcpt`` (address -> reply line or None) refuses chosen recipients at RCPT: to
    play a remote server that refuses or defers.
    """

    def __init__(self, *, port: int | None = None) -> None:
        self.host = LOOPBACK
        self.port = port or free_port()
        self.reply: str | None = None
        self.refuse_rcpt: Callable[[str], str | None] | None = None
        self.on_message: Callable[[Received], None] | None = None
        self._received: list[Received] = []
        self._refused = 0
        self._cond = threading.Condition()
        self._controller: Controller | None = None

    def start(self) -> Sink:
        self._controller = Controller(
            _SinkHandler(self), hostname=self.host, port=self.port, ready_timeout=10
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self, session: Session, envelope: Envelope) -> str:
        reply = self.reply
        if reply is not None:
            with self._cond:
                self._refused += 1
                self._cond.notify_all()
            return reply
        content = envelope.original_content or b""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        item = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=content,
            peer=peer,
            at=time.perf_counter(),
        )
        with self._cond:
            self._received.append(item)
            self._cond.notify_all()
        if self.on_message is not None:
            self.on_message(item)
        return "250 2.0.0 Stored"

    @property
    def messages(self) -> list[Received]:
        with self._cond:
            return list(self._received)

    @property
    def refused(self) -> int:
        with self._cond:
            return self._refused

    def clear(self) -> None:
        """Forget what was received and accept everything again."""
        with self._cond:
            self._received.clear()
            self._refused = 0
        self.reply = None
        self.refuse_rcpt = None

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 15.0
    ) -> list[Received]:
        """Block until ``predicate(messages)`` holds; fail loudly after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._received):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"sink: condition not met after {timeout}s "
                        f"({len(self._received)} received, {self._refused} refused)"
                    )
                self._cond.wait(left)
            return list(self._received)

    def wait_count(self, count: int, timeout: float = 15.0) -> list[Received]:
        return self.wait_for(lambda got: len(got) >= count, timeout)

    def wait_header(self, name: str, value: str, timeout: float = 15.0) -> Received:
        """The first received message whose header section has the field ``name: value``."""
        needle = f"\n{name}: {value}\r\n".lower().encode()

        def has(item: Received) -> bool:
            head = item.data.split(b"\r\n\r\n", 1)[0]
            return needle in b"\n" + head.lower() + b"\r\n"

        return next(m for m in self.wait_for(lambda got: any(map(has, got)), timeout) if has(m))


# ------------------------------------------------------------------------------------- postfix


_MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{listen} inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _main_cf(root: Path, relay_port: int, extra: dict[str, str]) -> str:
    params: dict[str, str] = {
        "compatibility_level": "3.6",
        "config_directory": str(root / "etc"),
        "queue_directory": str(root / "queue"),
        "data_directory": str(root / "data"),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "smarthost.mailveil.localhost",
        "mydomain": "mailveil.localhost",
        "myorigin": "$myhostname",
        "inet_interfaces": "loopback-only",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        # Nothing is local: every recipient, bounces to senders included, goes to the sink.
        "mydestination": "",
        "local_recipient_maps": "",
        "local_transport": "error:5.1.1 local delivery is disabled",
        "alias_maps": "",
        "alias_database": "",
        "relay_domains": "",
        "relayhost": f"[{LOOPBACK}]:{relay_port}",
        # No DNS anywhere: numeric next hop, /etc/hosts only, no reverse lookups of clients.
        "smtp_host_lookup": "native",
        "disable_dns_lookups": "yes",
        "smtpd_peername_lookup": "no",
        "smtp_connect_timeout": "5s",
        # A sink that was down is retried within seconds, not the production 5 minutes.
        "queue_run_delay": "1s",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "5s",
        "smtpd_banner": "$myhostname ESMTP",
        "biff": "no",
        "append_dot_mydomain": "no",
        "maillog_file": str(root / "maillog"),
        "maillog_file_prefixes": str(root),
        # "yes" means "normalize" (bare LF read as CRLF, only CRLF.CRLF ends DATA); "reject"
        # refuses bare LF outright, as the relay does, so both hops read messages alike.
        "smtpd_forbid_bare_newline": "reject",
        # The default exempts $mynetworks, which is every client here.
        "smtpd_forbid_bare_newline_exclusions": "",
    }
    params.update(extra)
    return "".join(f"{key} = {value}\n" for key, value in params.items())


@dataclass
class PostfixInstance:
    """One private Postfix: its own config, queue and data directories under ``root``."""

    root: Path
    relay_port: int
    port: int = field(default_factory=free_port)
    extra: dict[str, str] = field(default_factory=dict)
    host: str = LOOPBACK

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def log_path(self) -> Path:
        return self.root / "maillog"

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["postfix", "-c", str(self.config_dir), *args]
        if os.geteuid() != 0:
            command = ["sudo", "-n", *command]  # Postfix's master must start as root.
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"postfix {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.strip()}\n{self.log()[-4000:]}"
            )
        return result

    def write_config(self) -> None:
        # The daemons run as the postfix user: every directory on the way must be searchable.
        self.root.chmod(0o755)
        for name in ("etc", "queue", "data"):
            (self.root / name).mkdir(mode=0o755, exist_ok=True)
        shutil.chown(self.root / "data", user="postfix")
        main = _main_cf(self.root, self.relay_port, self.extra)
        (self.config_dir / "main.cf").write_text(main, encoding="ascii")
        listen = f"{self.host}:{self.port}"
        (self.config_dir / "master.cf").write_text(
            _MASTER_CF.format(listen=listen.ljust(9)), encoding="ascii"
        )
        # Postfix waits (in 300 ms steps) until a configuration file is 2 s old, lest it read
        # one half-written; these are complete, so dating them back saves seconds per start.
        past = time.time() - 60
        for name in ("main.cf", "master.cf"):
            os.utime(self.config_dir / name, (past, past))

    def start(self, timeout: float = 15.0) -> None:
        self.write_config()
        # Creates the queue's subdirectories with their owners and modes (postfix-files) and
        # checks the instance; cheaper than "set-permissions", which also walks the install.
        self._postfix("check")
        self._postfix("start")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    sock.settimeout(2)
                    if sock.recv(512).startswith(b"220"):
                        sock.sendall(b"QUIT\r\n")
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix did not answer on {self.port}:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        self._postfix("stop", check=False)

    def flush(self) -> None:
        """Ask the queue manager to retry deferred mail now."""
        self._postfix("flush", check=False)

    def queue(self) -> list[str]:
        """Queue ids of messages still queued (deferred, active, incoming)."""
        command = ["postqueue", "-c", str(self.config_dir), "-j"]
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
        return [line for line in out.stdout.splitlines() if line.strip()]

    def wait_queue_empty(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.queue():
            if time.monotonic() > deadline:
                raise TimeoutError(f"postfix queue not empty after {timeout}s")
            time.sleep(0.1)

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class Smarthost:
    """A running Postfix instance and the sink it relays into."""

    postfix: PostfixInstance
    sink: Sink

    @property
    def host(self) -> str:
        return self.postfix.host

    @property
    def port(self) -> int:
        return self.postfix.port


@contextmanager
def running_smarthost(
    *, extra: dict[str, str] | None = None, sink: Sink | None = None
) -> Iterator[Smarthost]:
    """Start a sink and a private Postfix relaying into it; stop and remove both afterwards."""
    # Not pytest's tmp_path: its parents are mode 0700, closed to the postfix user.
    root = Path(tempfile.mkdtemp(prefix="mailveil-postfix-"))
    own_sink = sink is None
    the_sink = sink or Sink()
    if own_sink:
        the_sink.start()
    instance = PostfixInstance(root=root, relay_port=the_sink.port, extra=dict(extra or {}))
    try:
        instance.start()
        try:
            yield Smarthost(instance, the_sink)
        finally:
            instance.stop()
    finally:
        if own_sink:
            the_sink.stop()
        shutil.rmtree(root, ignore_errors=True)


def swaks(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run Debian's swaks with ``args``; its transcript is in stdout."""
    return subprocess.run(
        ["swaks", "--hide-informational", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


__all__ = [
    "PostfixInstance",
    "Received",
    "Sink",
    "Smarthost",
    "free_port",
    "need",
    "postfix_installed",
    "postfix_required",
    "postfix_version",
    "running_smarthost",
    "swaks",
]
