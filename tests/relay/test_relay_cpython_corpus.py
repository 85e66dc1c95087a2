"""The rewriter over CPython's own email test messages: a clear refusal or a clean output."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from relay_testkit import traces

from mailveil.relay.errors import RelayRefusal
from mailveil.relay.parse import parse_message
from mailveil.relay.rewrite import rewrite_customer_to_principal


def corpus() -> list[Path]:
    spec = importlib.util.find_spec("test.test_email")
    if spec is None or spec.origin is None:
        return []
    return sorted((Path(spec.origin).parent / "data").glob("msg_*.txt"))


FILES = corpus()
ADDRESS = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


@pytest.mark.skipif(
    not FILES, reason="CPython's test.test_email package is not installed with this Python"
)
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_cpython_email_corpus(path: Path) -> None:
    raw = path.read_bytes()
    # Hide whichever address the message mentions first, as if it were the customer's.
    first = ADDRESS.search(raw)
    real = first.group(0).decode() if first else "nobody@example.invalid"
    try:
        message = parse_message(raw)
        out = rewrite_customer_to_principal(
            message,
            customer_alias="c-1@relay.test",
            redactions={real: "c-1@relay.test"},
            relay_domain="relay.test",
        )
    except RelayRefusal as exc:
        assert exc.reply.code >= 500
        return
    assert traces(out, real) == []
