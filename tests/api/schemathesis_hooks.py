"""Schemathesis hooks for the fuzz test (loaded through SCHEMATHESIS_HOOKS).

Bulk routes also take NDJSON (one JSON object per line); Schemathesis has no serializer for
it, so one is given here: a generated object becomes one line, a string is sent as it is."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(_ctx: Any, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return (json.dumps(value) + "\n").encode()
