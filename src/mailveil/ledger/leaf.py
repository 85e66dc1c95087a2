"""The canonical leaf bytes of a ledger entry: one format, built in Python and in SQL.

The leaf is UTF-8 text, these fields joined by newlines (0x0a), in this order::

    seq, time_us, hex(prev_hash), kind, actor, subject, alias, purpose, ref, detail

``seq`` and ``time_us`` are decimal integers, ``prev_hash`` is 64 lowercase hex digits (the
previous entry's leaf hash; 64 zeros before the first entry). Each text field is written
``<utf-8 byte length>:<value>``, and a missing one (NULL) as ``-``. Length prefixes make the
encoding injective whatever the fields contain, and ``-`` can never start a length, so None
and "" differ. The leaf hash SHA-256(0x00 || leaf) is both the hash chain link and the
RFC 9162 Merkle leaf hash, so each entry is hashed once.

Verification builds the same bytes inside the database (``leaf_sql``) so the hot loop in
Python is only a hash per row; tests check the SQL and Python encoders agree.
"""

from __future__ import annotations

GENESIS_PREV = bytes(32)

TEXT_FIELDS = ("kind", "actor", "subject", "alias", "purpose", "ref", "detail")


def _field(value: str | None) -> str:
    if value is None:
        return "-"
    return f"{len(value.encode('utf-8'))}:{value}"


def leaf_bytes(
    seq: int,
    time_us: int,
    prev_hash: bytes,
    kind: str | None,
    actor: str | None,
    subject: str | None,
    alias: str | None,
    purpose: str | None,
    ref: str | None,
    detail: str | None,
) -> bytes:
    text = "\n".join(
        (
            str(seq),
            str(time_us),
            prev_hash.hex(),
            _field(kind),
            _field(actor),
            _field(subject),
            _field(alias),
            _field(purpose),
            _field(ref),
            _field(detail),
        )
    )
    return text.encode("utf-8")


def _sqlite_field(col: str) -> str:
    return f"CASE WHEN {col} IS NULL THEN '-' ELSE length(CAST({col} AS BLOB)) || ':' || {col} END"


def _pg_field(col: str) -> str:
    return f"CASE WHEN {col} IS NULL THEN '-' ELSE octet_length({col})::text || ':' || {col} END"


def leaf_sql(dialect: str, prefixed: bool = True) -> str:
    """A SQL expression over ledger_entries giving (0x00 ||) leaf bytes as a blob / bytea.

    With ``prefixed`` the RFC 9162 leaf prefix is included, so Python hashes the value as is.
    """
    nl = "char(10)" if dialect == "sqlite" else "E'\\n'"
    if dialect == "sqlite":
        parts = ["seq", "time_us", "lower(hex(prev_hash))", *map(_sqlite_field, TEXT_FIELDS)]
        body = f" || {nl} || ".join(parts)
        head = "x'00' || " if prefixed else ""
        return f"CAST({head}{body} AS BLOB)"
    if dialect == "postgresql":
        parts = [
            "seq::text",
            "time_us::text",
            "encode(prev_hash, 'hex')",
            *map(_pg_field, TEXT_FIELDS),
        ]
        body = f" || {nl} || ".join(parts)
        head = "'\\x00'::bytea || " if prefixed else ""
        return f"{head}convert_to({body}, 'UTF8')"
    raise ValueError(f"no leaf encoder for the {dialect} dialect")


__all__ = ["GENESIS_PREV", "TEXT_FIELDS", "leaf_bytes", "leaf_sql"]
