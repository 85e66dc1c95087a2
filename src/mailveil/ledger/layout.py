"""Names and numbers of the ledger's storage layout, importable without SQLAlchemy (the
verification worker process only needs these and a DBAPI connection)."""

from __future__ import annotations

from mailveil.ledger.merkle import TILE_HEIGHT

HEAD_ID = 1  # the one ledger_head row
SEQ_CHECK = "ck_ledger_entries_leaf_seq"  # CHECK: each leaf names its own seq
GENERATED_COLUMNS = (
    "time_us",
    "kind",
    "actor",
    "subject",
    "alias",
    "purpose",
    "ref",
    "detail",
    "prev_hash",
)

__all__ = ["GENERATED_COLUMNS", "HEAD_ID", "SEQ_CHECK", "TILE_HEIGHT"]
