"""Structured JSON logs (structlog) with a last-line-of-defence address scrubber.

Code never logs real addresses on purpose; the scrubber makes an accident harmless too: any
address not on the relay domain is replaced before a line is written.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from mailveil.config import Settings

_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def scrub(text: str, relay_domain: str) -> str:
    def repl(match: re.Match[str]) -> str:
        addr = match.group(0)
        domain = addr.rsplit("@", 1)[1].lower()
        if domain == relay_domain or domain.endswith("." + relay_domain):
            return addr
        return "[address]"

    return _ADDRESS.sub(repl, text)


def _scrubber(relay_domain: str) -> Any:
    def processor(
        _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event.items()):
            if isinstance(value, str) and "@" in value:
                event[key] = scrub(value, relay_domain)
        return event

    return processor


class ScrubbingFormatter(logging.Formatter):
    """Scrubs the whole formatted record, tracebacks included: libraries (uvicorn, SQLAlchemy)
    log exceptions whose text we do not control."""

    def __init__(self, relay_domain: str) -> None:
        super().__init__("%(message)s")
        self.relay_domain = relay_domain

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record), self.relay_domain)


def configure_logging(settings: Settings, *, to_file: bool = True) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if to_file:
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(settings.logs_dir / "mailveil.log", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(ScrubbingFormatter(settings.relay_domain))
    logging.basicConfig(level=level, handlers=handlers, force=True)
    # uvicorn installs its own handlers; route its records through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrubber(settings.relay_domain),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
