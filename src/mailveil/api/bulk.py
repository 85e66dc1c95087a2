"""Bulk bodies: spooled to a temporary file while hashed, then read line by line.

Memory stays bounded (the spool moves to disk past 1 MiB) whatever the body size, which the
BodySizeLimit middleware caps. The hash serves the Idempotency-Key check.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from fastapi import Request

from mailveil.errors import InvalidInput

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson")
SPOOL_BYTES = 1024 * 1024


@dataclass
class SpooledBody:
    file: IO[bytes]
    sha256: bytes
    size: int

    def lines(self) -> Iterator[bytes]:
        self.file.seek(0)
        yield from self.file

    def close(self) -> None:
        self.file.close()


def ndjson_body(description: str) -> dict[str, Any]:
    """The OpenAPI schema of an NDJSON request body: text, at least one byte (an empty body
    is refused; blank or bad lines are reported line by line in a 200 answer)."""
    return {"type": "string", "minLength": 1, "description": description}


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_ndjson(request: Request) -> bool:
    return media_type(request) in NDJSON_TYPES


async def spool(request: Request) -> SpooledBody:
    digest = hashlib.sha256(request.method.encode() + b"\0" + request.url.path.encode() + b"\0")
    file = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed by caller
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        file.write(chunk)
        size += len(chunk)
    if size == 0:
        file.close()
        raise InvalidInput("the body is empty: send one JSON object per line")
    return SpooledBody(file=file, sha256=digest.digest(), size=size)
