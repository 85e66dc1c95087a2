"""One log line and one count per relay transaction, written when its final reply is known.

The line carries the message token (when a message was recorded), the direction, the
decision, the reply code and the latency: never an envelope address (the recipient is an
alias or a real address depending on direction; neither is needed to follow a message,
the token finds it in the ledger).
"""

from __future__ import annotations

import time

from mailveil.logs import get_logger
from mailveil.ops.metrics import Metrics, reply_class
from mailveil.relay.codes import Reply

_log = get_logger("mailveil.relay")


def _default_decision(code: int) -> str:
    if code < 300:
        return "accepted"
    return "deferred" if code < 500 else "refused"


def transaction_done(
    metrics: Metrics,
    *,
    started: float | None,
    reply: Reply | str,
    direction: str | None,
    decision: str | None,
    token: str | None,
) -> None:
    text = str(reply)
    try:
        code = int(text[:3])
    except ValueError:
        code = 0
    enhanced = text[4:].split(" ", 1)[0] if len(text) > 4 else ""
    elapsed = time.perf_counter() - started if started is not None else None
    direction = direction or "unrouted"
    if decision == "outgoing":  # handed to the smarthost: its answer is the decision
        decision = "delivered" if code < 300 else "deferred" if code < 500 else "rejected"
    elif decision == "held":
        decision = "quarantined"
    decision = decision or _default_decision(code)
    metrics.relay_transactions.labels(direction, decision, reply_class(code)).inc()
    if elapsed is not None:
        metrics.relay_latency.labels(direction).observe(elapsed)
    _log.info(
        "relay_transaction",
        token=token,
        direction=direction,
        decision=decision,
        reply_code=code,
        reply_enhanced=enhanced,
        latency_ms=round(elapsed * 1000, 2) if elapsed is not None else None,
    )


__all__ = ["transaction_done"]
