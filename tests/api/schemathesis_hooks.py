"""Schemathesis hooks for the fuzz test (loaded through SCHEMATHESIS_HOOKS).

Bulk routes also take NDJSON and the report route a raw message; Schemathesis has no
serializer for either. A generated string is sent as the body's text. Anything else is not
text, which neither format can carry: it is sent as an empty body, which the server must
refuse (the document requires at least one byte)."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson", "message/rfc822")
def as_text(_ctx: Any, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return b""
