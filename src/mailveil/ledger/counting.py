"""Ledger entries counted when the transaction that appended them commits.

``ledger.append`` notes how many entries a session appended; a listener on the session
factory (attached by ``Runtime.open``) turns the committed ones into the metric.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

# -- ledger entries, counted when their transaction commits ------------------------------
APPENDED = "mailveil_ledger_appended"  # session.info key; ledger.append adds to it


def note_appended(session: Session, count: int) -> None:
    """Called by ``ledger.append``: ``count`` entries wait for this session's commit."""
    session.info[APPENDED] = session.info.get(APPENDED, 0) + count


def count_ledger_commits(factory: sessionmaker[Session], counter: Any) -> None:
    """Increment ``counter`` by the entries each commit of ``factory``'s sessions made
    durable (a rolled-back append counts nothing). One listener per factory, feeding every
    counter attached to it (tests open several runtimes on one factory)."""
    from sqlalchemy import event

    counters: list[Any] | None = factory.__dict__.get("_mailveil_ledger_counters")
    if counters is None:
        counters = []
        factory.__dict__["_mailveil_ledger_counters"] = counters

        def committed(session: Session) -> None:
            n = session.info.pop(APPENDED, 0)
            if n:
                for c in counters:
                    c.inc(n)

        def rolled_back(session: Session) -> None:
            session.info.pop(APPENDED, None)

        event.listen(factory, "after_commit", committed)
        event.listen(factory, "after_rollback", rolled_back)
    counters.append(counter)


__all__ = ["APPENDED", "count_ledger_commits", "note_appended"]
