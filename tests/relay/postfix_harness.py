"""A private Postfix instance relaying into an in-process sink, for end-to-end relay tests and
the relay benchmark.

``PostfixInstance`` writes its own ``main.cf``/``master.cf`` into a fresh directory with its own
queue and data directories, listens on one free 127.0.0.1 port and relays everything it accepts
to ``[127.0.0.1]:<sink port>``: no local delivery, no DNS, nothing but loopback. The system's
own Postfix (``/etc/postfix``) is never read, configured or started.

Its sink is ``smtp_kit.Sink`` (tests/smtp_kit.py, the tests' one SMTP sink), so a test can
read exactly the bytes that crossed the last hop.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mailveil.demo.harness import free_port
from smtp_kit import Sink

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

    def master_pid(self) -> int:
        """The instance's master process (its smtpd, cleanup, qmgr and smtp are children)."""
        return int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])

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
    "Smarthost",
    "need",
    "postfix_installed",
    "postfix_required",
    "postfix_version",
    "running_smarthost",
    "swaks",
]
