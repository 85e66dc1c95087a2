"""Idempotency-Key for POSTs: a retried request gets the first answer back, not a second effect.

The key is scoped to the API key that sent it. A reused key with a different body is an
error, not a replay. Stored answers expire after a day.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, Session, mapped_column

from mailveil.db.base import Base, UTCDateTime, utcnow
from mailveil.errors import Conflict, InvalidInput

TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 200


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    api_key_id: Mapped[int] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    request_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


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
