"""Idempotency-Key for POSTs: a retried request gets the first answer back, not a second effect.

The key is scoped to the API key that sent it. A reused key with a different body is an
error, not a replay. Stored answers expire after a day.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from mailveil.api.models import MAX_KEY_LENGTH, IdempotencyRecord
from mailveil.db.base import utcnow
from mailveil.errors import Conflict, InvalidInput

TTL = timedelta(hours=24)


class IdempotencyMismatch(InvalidInput):
    code = "idempotency-key-reused"
    title = "Idempotency-Key reused with a different request"


class IdempotencyInFlight(Conflict):
    code = "idempotency-in-flight"
    title = "A request with this Idempotency-Key is still in progress"


def request_fingerprint(method: str, path: str, body: bytes) -> bytes:
    return hashlib.sha256(method.encode() + b"\0" + path.encode() + b"\0" + body).digest()


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidInput(f"Idempotency-Key must be 1..{MAX_KEY_LENGTH} printable characters")
    return key


def lookup(
    session: Session, api_key_id: int, key: str, fingerprint: bytes
) -> tuple[int, Any] | None:
    row = session.get(IdempotencyRecord, (api_key_id, key))
    if row is None:
        return None
    if row.created_at < utcnow() - TTL:
        session.delete(row)
        session.flush()
        return None
    if row.request_hash != fingerprint:
        raise IdempotencyMismatch("this Idempotency-Key was used for a different request")
    return row.status_code, json.loads(row.response_body)


def remember(
    session: Session,
    api_key_id: int,
    key: str,
    method: str,
    path: str,
    fingerprint: bytes,
    status_code: int,
    body: Any,
) -> None:
    session.add(
        IdempotencyRecord(
            api_key_id=api_key_id,
            key=key,
            method=method,
            path=path,
            request_hash=fingerprint,
            status_code=status_code,
            response_body=json.dumps(body),
            created_at=utcnow(),
        )
    )


__all__ = [
    "MAX_KEY_LENGTH",
    "TTL",
    "IdempotencyInFlight",
    "IdempotencyMismatch",
    "IdempotencyRecord",
    "check_key",
    "lookup",
    "remember",
    "request_fingerprint",
]
