"""Structured logs (structlog), configured once from settings by the command that starts.

Every record, structlog's and the standard library's (uvicorn, SQLAlchemy, our own
``logging.getLogger`` callers), goes through one ``ProcessorFormatter``: JSON lines when
``log_json`` is on (one object a line, ``event`` the message), a console renderer otherwise.

Code never logs real addresses on purpose; two scrubbers make an accident harmless: a
processor replaces every address-shaped value that is not an alias (an address on the relay
domain) in every field, nested ones included, and the formatter scrubs the finished line
(tracebacks included) once more.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import IO, Any

import structlog

from mailveil.config import Settings

_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
REDACTED = "[address]"


def scrub(text: str, relay_domain: str) -> str:
    """``text`` with every address not on ``relay_domain`` (or a subdomain) replaced."""

    def repl(match: re.Match[str]) -> str:
        addr = match.group(0)
        domain = addr.rsplit("@", 1)[1].lower()
        if domain == relay_domain or domain.endswith("." + relay_domain):
            return addr
        return REDACTED

    return _ADDRESS.sub(repl, text)


def scrub_value(value: Any, relay_domain: str) -> Any:
    if isinstance(value, str):
        return scrub(value, relay_domain) if "@" in value else value
    if isinstance(value, dict):
        return {k: scrub_value(v, relay_domain) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [scrub_value(v, relay_domain) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return scrub_value(bytes(value).decode("utf-8", "replace"), relay_domain)
    return value


def address_scrubber(relay_domain: str) -> Any:
    """The structlog processor: every field, nested values too."""
    domain = relay_domain.lower()

    def processor(
        _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event.items()):
            event[key] = scrub_value(value, domain)
        return event

    return processor


class ScrubbingFormatter(structlog.stdlib.ProcessorFormatter):
    """Renders records through the processors, then scrubs the finished line: libraries
    (uvicorn, SQLAlchemy) log exceptions whose text we do not control."""

    def __init__(self, relay_domain: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.relay_domain = relay_domain.lower()

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record), self.relay_domain)


def _formatter(settings: Settings) -> ScrubbingFormatter:
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    return ScrubbingFormatter(
        settings.relay_domain,
        foreign_pre_chain=[structlog.contextvars.merge_contextvars, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            address_scrubber(settings.relay_domain),
            renderer,
        ],
    )


def _chain() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.filter_by_level,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ]


def get_logger(name: str) -> Any:
    """A structlog logger on the standard library's ``name`` logger, whether or not
    ``configure_logging`` ran: before it (a CLI command, a test) records below WARNING go
    nowhere and nothing is printed to stdout, where a command's output goes."""
    return structlog.wrap_logger(
        logging.getLogger(name), processors=_chain(), wrapper_class=structlog.stdlib.BoundLogger
    )


def configure_logging(
    settings: Settings, *, to_file: bool = True, stream: IO[str] | None = None
) -> None:
    """Route every logger to stderr (or ``stream``) and, with ``to_file``, to
    ``data_dir/logs/mailveil.log``; one JSON object a line when ``log_json``."""
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if to_file:
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(settings.logs_dir / "mailveil.log", encoding="utf-8"))
    formatter = _formatter(settings)
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=handlers, force=True)
    # uvicorn installs its own handlers; route its records through ours instead. Its access
    # log is off: the API logs every request itself, with the route template, not the path.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    structlog.configure(
        processors=_chain(),
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


def reset_logging() -> None:
    """Undo ``configure_logging`` (tests): close our handlers, structlog's defaults back."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        handler.close()
        root.removeHandler(handler)
    structlog.reset_defaults()


__all__ = [
    "REDACTED",
    "address_scrubber",
    "configure_logging",
    "get_logger",
    "reset_logging",
    "scrub",
    "scrub_value",
]
