"""The whole suite's logs, scanned for real addresses (issue 14: "never an address, tested by
scanning the logs of the whole suite").

Two nets, both over every test of the run (each xdist worker scans its own share):

- **Records, before any scrubbing.** Every record any logger hands to its handlers — ours,
  uvicorn's, SQLAlchemy's, aiosmtpd's — is rendered raw (message, structured fields, traceback)
  and searched for an address that is not an alias. The scrubbers in ``mailveil.logs`` make an
  accident harmless; this net finds the accident itself, so code never logs an address on
  purpose and relies on the scrubber.
- **Files, as written.** At the end, every ``*.log`` file under the run's temporary folder (the
  log files of in-process services and of ``mailveil serve``/``worker`` subprocesses) is read
  and searched the same way: what an operator would ship to a log store.

A test that logs an address on purpose (to prove the scrubber) says so with
``@pytest.mark.logs_an_address``. An address is an alias when its domain is a relay domain
(``relay.*`` or a subdomain of one): aliases and reverse aliases are not anyone's address.
Findings name the test, the logger and the address's domain, never the address itself.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
MARK = "logs_an_address"


def is_alias_domain(domain: str) -> bool:
    """The suite's relay domains (``relay.test``, ``relay.example``, ``relay.mailveil.localhost``,
    ``relay.shop.example``…) and their subdomains; ``relay.test.evil.example`` is not one."""
    labels = domain.lower().rstrip(".").split(".")
    return any(label == "relay" and 1 <= len(labels) - i - 1 <= 2 for i, label in enumerate(labels))


def real_addresses(text: str) -> list[str]:
    if "@" not in text:
        return []
    return [
        m.group(0) for m in _ADDRESS.finditer(text) if not is_alias_domain(m.group(0).split("@")[1])
    ]


def _raw_text(record: logging.LogRecord) -> str:
    parts: list[str] = []
    msg = record.msg
    if isinstance(msg, dict):  # structlog's event dict, as wrap_for_formatter hands it over
        parts.append(json.dumps(msg, default=repr))
    else:
        try:
            parts.append(record.getMessage())
        except Exception:  # a broken format string is the logger's own bug, not a leak
            parts.append(repr(msg))
    if record.exc_info and record.exc_info[1] is not None:
        parts.append("".join(traceback.format_exception(*record.exc_info)))
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts)


@dataclass
class Finding:
    test: str
    where: str
    domain: str

    def __str__(self) -> str:
        return f"{self.test}: {self.where} logged an address at @{self.domain}"


@dataclass
class LogScan:
    current: str = "(outside a test)"
    on_purpose: bool = False
    # tmp_path folder names of the tests that log an address on purpose (their files too)
    purposeful_dirs: set[str] = field(default_factory=set)
    records: int = 0
    findings: list[Finding] = field(default_factory=list)

    def see(self, record: logging.LogRecord) -> None:
        self.records += 1
        if self.on_purpose:
            return
        text = _raw_text(record)
        if record.name.startswith("httpx") and "://testserver" in text:
            return  # the test's own client (TestClient) logging the URL it asked for
        for address in real_addresses(text):
            self.findings.append(Finding(self.current, record.name, address.split("@")[1]))

    def scan_files(self, root: Path) -> None:
        for path in sorted(root.rglob("*.log")):
            if not path.is_file() or self.purposeful_dirs & set(path.parts):
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for address in real_addresses(text):
                where = f"file {path.relative_to(root)}"
                self.findings.append(Finding("(the run's log files)", where, address.split("@")[1]))


SCAN = LogScan()


@contextmanager
def logging_an_address() -> Iterator[None]:
    """Within: records may hold an address (a test proving the scrubber logs one)."""
    before, SCAN.on_purpose = SCAN.on_purpose, True
    try:
        yield
    finally:
        SCAN.on_purpose = before


_original_handle = logging.Logger.handle


def _handle(self: logging.Logger, record: logging.LogRecord) -> Any:
    try:
        SCAN.see(record)
    except Exception as exc:  # never change what the code sees; a scan that failed is a finding
        SCAN.findings.append(
            Finding(SCAN.current, record.name, f"(unscanned: {type(exc).__name__})")
        )
    return _original_handle(self, record)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARK}: the test logs a real address on purpose")
    logging.Logger.handle = _handle  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.Logger.handle = _original_handle  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _log_scan_context(request: pytest.FixtureRequest) -> Iterator[None]:
    SCAN.current = request.node.nodeid
    SCAN.on_purpose = request.node.get_closest_marker(MARK) is not None
    if SCAN.on_purpose:  # pytest names tmp_path after the test: its first 30 word characters
        SCAN.purposeful_dirs.add(re.sub(r"[\W]", "_", request.node.name)[:30] + "0")
    try:
        yield
    finally:
        SCAN.current, SCAN.on_purpose = "(outside a test)", False


@pytest.fixture(scope="session", autouse=True)
def _whole_suite_log_scan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogScan]:
    yield SCAN
    SCAN.scan_files(tmp_path_factory.getbasetemp())
    if SCAN.findings:
        shown = "\n".join(str(f) for f in SCAN.findings[:40])
        more = len(SCAN.findings) - 40
        tail = f"\n… and {more} more" if more > 0 else ""
        pytest.fail(
            f"{len(SCAN.findings)} real address(es) in the suite's logs "
            f"({SCAN.records} records scanned):\n{shown}{tail}",
            pytrace=False,
        )
