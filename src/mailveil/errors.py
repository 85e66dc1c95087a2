"""Domain errors shared by every area.

Each carries a stable ``code`` (the problem type slug), an HTTP status for the API and a
message for people. Messages name ids, never real addresses: an error can end up in a log,
an API response or a terminal.
"""

from __future__ import annotations

from typing import Any


class MailveilError(Exception):
    code = "error"
    status = 400
    title = "Request failed"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(MailveilError):
    code = "invalid-input"
    status = 422
    title = "Invalid input"


class InvalidAddress(InvalidInput):
    code = "invalid-address"
    title = "Invalid email address"


class NotFound(MailveilError):
    code = "not-found"
    status = 404
    title = "Not found"


class Conflict(MailveilError):
    code = "conflict"
    status = 409
    title = "Conflict"


class Duplicate(Conflict):
    code = "duplicate"
    title = "Already exists"


class PolicyDenied(MailveilError):
    """A decided refusal: the Cedar policies that decided and the ledger entry recording it."""

    code = "policy-denied"
    status = 403
    title = "Denied by policy"

    def __init__(
        self, detail: str, *, policies: tuple[str, ...] = (), ledger_seq: int | None = None
    ) -> None:
        super().__init__(detail, policies=list(policies), ledger_seq=ledger_seq)


class Forbidden(MailveilError):
    code = "forbidden"
    status = 403
    title = "Forbidden"


class Revoked(MailveilError):
    code = "revoked"
    status = 410
    title = "Revoked"


class LedgerCorrupt(MailveilError):
    code = "ledger-corrupt"
    status = 500
    title = "Ledger verification failed"
