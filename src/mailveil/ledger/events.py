"""What callers append to the ledger. No real address ever goes in: customers are named by id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # e.g. "disclosure", "disclosure_denied", "reveal", "message", "send", "signal"
    actor: str | None = None  # who acted: "principal:42", "apikey:7", "system"
    subject: str | None = None  # about whom: "customer:1234"
    alias: str | None = None  # the alias address involved, if any
    purpose: str | None = None
    ref: str | None = None  # order / case / template reference
    detail: dict[str, Any] = field(default_factory=dict)  # small, JSON-serialisable, no addresses
