"""Getting employee access out of the ledger (SQLite or PostgreSQL) into DuckDB.

DuckDB's sqlite/postgres scanner extensions are downloaded on first use; an offline machine
cannot fetch them (tested: ``INSTALL sqlite`` fails without extensions.duckdb.org). The job
only probes for a locally installed one (``ExtractStats.scanner``), never installs, and
streams the needed columns through the engine's DB-API cursor in large batches, each batch
turned into NumPy columns that DuckDB scans in place (measured fastest of executemany,
temporary CSV + ``read_csv`` and NumPy; see ``benchmarks/anomalies.py``).

Raw rows land in ``raw_events`` (seq, time_us, kind, actor, subject, ref, detail JSON text),
exactly the ledger's columns, so the DuckDB phase of the job runs the same on a synthetic
table of that shape. The ledger is append-only, so a persistent DuckDB file can be topped up
by seq: ``seq_watermark`` remembers the last seq read and its leaf hash, and a different
hash there (another or a rebuilt database) empties the cache instead of mixing ledgers.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import numpy as np
from sqlalchemy import Engine, text

ACCESS_KINDS = (
    "disclosure",
    "employee_list",
    "reveal_requested",
    "reveal_viewed",
    "access_refused",
)
RAW_COLUMNS = ("seq", "time_us", "kind", "actor", "subject", "ref", "detail")
LoadMethod = Literal["numpy", "csv", "executemany"]

RAW_DDL = """
CREATE TABLE IF NOT EXISTS raw_events (
    seq BIGINT, time_us BIGINT, kind VARCHAR, actor VARCHAR, subject VARCHAR,
    ref VARCHAR, detail VARCHAR
)"""
SIDE_DDL = (
    "CREATE OR REPLACE TABLE employees (employee_id INTEGER, team VARCHAR, role VARCHAR, "
    "region VARCHAR)",
    "CREATE OR REPLACE TABLE customers (customer_id BIGINT, country VARCHAR)",
    "CREATE OR REPLACE TABLE cases (external_id VARCHAR, customer_id BIGINT)",
)
WATERMARK_DDL = (
    "CREATE TABLE IF NOT EXISTS seq_watermark (seq BIGINT, leaf_hash BLOB, source VARCHAR)"
)


@dataclass
class ExtractStats:
    method: str = ""
    rows: int = 0  # access rows copied this run
    scanned_from: int = -1  # first seq read this run is scanned_from + 1
    scanned_to: int = -1
    seconds: float = 0.0
    scanner: str | None = None  # a DuckDB scanner extension found installed, else streamed


def scanner_extension(dialect: str) -> str | None:
    """The DuckDB scanner for this backend if it is installed locally (never downloaded)."""
    name = {"sqlite": "sqlite_scanner", "postgresql": "postgres_scanner"}.get(dialect)
    if name is None:
        return None
    probe = duckdb.connect()
    try:
        row = probe.execute(
            "SELECT installed FROM duckdb_extensions() WHERE extension_name = ?", [name]
        ).fetchone()
        if not row or not row[0]:
            return None
        probe.execute(f"LOAD {name}")
        return name
    except duckdb.Error:
        return None
    finally:
        probe.close()


def _columns(rows: Sequence[Sequence[Any]], n: int) -> list[list[Any]]:
    if not rows:
        return [[] for _ in range(n)]
    return [list(col) for col in zip(*rows, strict=True)]


def _numpy_batch(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    cols = _columns(rows, len(names))
    out: dict[str, Any] = {}
    for name, col in zip(names, cols, strict=True):
        if name in ("seq", "time_us", "customer_id", "employee_id"):
            out[name] = np.array(col, dtype=np.int64)
        else:
            out[name] = np.array(col, dtype=object)
    return out


class BatchLoader:
    """Appends row batches to a DuckDB table by one of three measured methods. Table and
    column names are the module's own constants, never input (hence the S608 waivers)."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, table: str, names: Sequence[str], method: LoadMethod
    ) -> None:
        self.con, self.table, self.names, self.method = con, table, tuple(names), method
        self._csv: tuple[int, str] | None = None
        self._writer: Any = None
        self._file: Any = None

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        cols = ", ".join(self.names)
        if self.method == "numpy":
            batch = _numpy_batch(self.names, rows)  # noqa: F841  (DuckDB scans it by name)
            sql = f"INSERT INTO {self.table} ({cols}) SELECT {cols} FROM batch"  # noqa: S608
            self.con.execute(sql)
        elif self.method == "executemany":
            marks = ", ".join("?" for _ in self.names)
            sql = f"INSERT INTO {self.table} ({cols}) VALUES ({marks})"  # noqa: S608
            self.con.executemany(sql, [list(r) for r in rows])
        else:
            if self._file is None:
                fd, path = tempfile.mkstemp(suffix=".csv", prefix="mailveil-anomalies-")
                self._csv = (fd, path)
                self._file = os.fdopen(fd, "w", newline="", encoding="utf-8")
                # A staging file DuckDB reads back, never opened by a person: values stay
                # exact, so not mailveil.csvout (whose quote would change them).
                self._writer = csv.writer(self._file)
            self._writer.writerows(rows)

    def finish(self) -> None:
        if self._file is None or self._csv is None:
            return
        self._file.close()
        path = self._csv[1]
        try:
            cols = ", ".join(self.names)
            types = self.con.execute(f"SELECT {cols} FROM {self.table} LIMIT 0").description  # noqa: S608
            spec = ", ".join(f"'{d[0]}': '{d[1]}'" for d in types)
            self.con.execute(
                f"INSERT INTO {self.table} ({cols}) SELECT {cols} FROM read_csv(?, "  # noqa: S608
                f"header = false, columns = {{{spec}}}, quote = '\"', escape = '\"', "
                "nullstr = '\\N')",
                [path],
            )
        finally:
            self._file = None
            os.unlink(path)


def _stream(
    engine: Engine,
    sql: str,
    params: dict[str, Any],
    sink: Callable[[Sequence[Sequence[Any]]], None],
    batch_rows: int,
) -> int:
    """Run one query on a raw DB-API cursor (no per-row ORM work) and feed it by batches."""
    total = 0
    raw = engine.raw_connection()
    try:
        if engine.dialect.name == "postgresql":
            # A named (server-side) cursor, so PostgreSQL streams instead of buffering all.
            cur: Any = raw.driver_connection.cursor(name="mailveil_anomalies")  # type: ignore[union-attr]
            cur.itersize = batch_rows
            compiled = text(sql).bindparams(**params).compile(engine)
            cur.execute(str(compiled), compiled.params)
        else:
            cur = raw.cursor()
            compiled = text(sql).bindparams(**params).compile(engine)
            cur.execute(
                str(compiled), tuple(compiled.params[k] for k in compiled.positiontup or [])
            )
        while True:
            rows = cur.fetchmany(batch_rows)
            if not rows:
                break
            sink(rows)
            total += len(rows)
        cur.close()
    finally:
        raw.rollback()
        raw.close()
    return total


def _csv_safe(rows: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    return [tuple("\\N" if v is None else v for v in r) for r in rows]


def copy_rows(
    engine: Engine,
    con: duckdb.DuckDBPyConnection,
    table: str,
    names: Sequence[str],
    sql: str,
    params: dict[str, Any],
    *,
    method: LoadMethod = "numpy",
    batch_rows: int = 100_000,
) -> int:
    loader = BatchLoader(con, table, names, method)
    if method == "csv":
        n = _stream(engine, sql, params, lambda rows: loader.add(_csv_safe(rows)), batch_rows)
    else:
        n = _stream(engine, sql, params, loader.add, batch_rows)
    loader.finish()
    return n


def _ledger_sql(dialect: str) -> str:
    # Only access kinds, and a seq range (the primary key: a sequential scan on both backends).
    kinds = ", ".join(f"'{k}'" for k in ACCESS_KINDS)
    return (
        "SELECT seq, time_us, kind, actor, subject, ref, detail FROM ledger_entries "  # noqa: S608
        f"WHERE seq > :lo AND seq <= :hi AND kind IN ({kinds}) "
        "AND time_us >= :t0 AND time_us < :t1 ORDER BY seq"
    )


def _side_sql(dialect: str) -> tuple[str, str, str]:
    team, role, region = (
        (
            "json_extract(attributes, '$.team')",
            "json_extract(attributes, '$.role')",
            "json_extract(attributes, '$.region')",
        )
        if dialect == "sqlite"
        else (
            "CAST(attributes AS json) ->> 'team'",
            "CAST(attributes AS json) ->> 'role'",
            "CAST(attributes AS json) ->> 'region'",
        )
    )
    return (
        f"SELECT id, {team}, {role}, {region} FROM principals WHERE kind = 'employee'",  # noqa: S608
        "SELECT id, country FROM customers",
        "SELECT external_id, customer_id FROM support_cases",
    )


def _ledger_head(engine: Engine, seq: int | None = None) -> tuple[int, bytes | None]:
    with engine.connect() as conn:
        if seq is None:
            size = conn.execute(text("SELECT size FROM ledger_head WHERE id = 1")).scalar()
            seq = int(size or 0) - 1
        if seq < 0:
            return -1, None
        h = conn.execute(
            text("SELECT leaf_hash FROM ledger_entries WHERE seq = :s"), {"s": seq}
        ).scalar()
        return seq, bytes(h) if h is not None else None


def _source_name(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def load_from_database(
    engine: Engine,
    con: duckdb.DuckDBPyConnection,
    *,
    t0_us: int,
    t1_us: int,
    method: LoadMethod = "numpy",
    batch_rows: int = 100_000,
    seq_batch: int = 1_000_000,
) -> ExtractStats:
    """Fill (or top up) ``raw_events`` and refresh the employees/customers/cases tables.

    With a persistent ``con`` holding a watermark from the same ledger, only entries after
    it are read; the time window then only bounds what a fresh cache starts with.
    """
    import time

    started = time.perf_counter()
    stats = ExtractStats(method=method, scanner=scanner_extension(engine.dialect.name))
    con.execute(RAW_DDL)
    con.execute(WATERMARK_DDL)
    source = _source_name(engine)
    last, _ = _ledger_head(engine)
    mark = con.execute("SELECT seq, leaf_hash, source FROM seq_watermark").fetchone()
    lo = -1
    if mark is not None:
        seq, leaf_hash, src = int(mark[0]), mark[1], str(mark[2])
        if src == source and seq <= last and _ledger_head(engine, seq)[1] == bytes(leaf_hash):
            lo = seq
            t0_us = 0  # incremental: everything after the watermark
        else:
            con.execute("DELETE FROM raw_events")
    sql = _ledger_sql(engine.dialect.name)
    stats.scanned_from, stats.scanned_to = lo, last
    while lo < last:
        hi = min(last, lo + seq_batch)
        params = {"lo": lo, "hi": hi, "t0": t0_us, "t1": t1_us}
        stats.rows += copy_rows(
            engine,
            con,
            "raw_events",
            RAW_COLUMNS,
            sql,
            params,
            method=method,
            batch_rows=batch_rows,
        )
        lo = hi
    if last >= 0:
        _, last_hash = _ledger_head(engine, last)
        con.execute("DELETE FROM seq_watermark")
        con.execute("INSERT INTO seq_watermark VALUES (?, ?, ?)", [last, last_hash, source])
    for ddl in SIDE_DDL:
        con.execute(ddl)
    emp_sql, cust_sql, case_sql = _side_sql(engine.dialect.name)
    copy_rows(
        engine,
        con,
        "employees",
        ("employee_id", "team", "role", "region"),
        emp_sql,
        {},
        method=method,
        batch_rows=batch_rows,
    )
    copy_rows(
        engine,
        con,
        "customers",
        ("customer_id", "country"),
        cust_sql,
        {},
        method=method,
        batch_rows=batch_rows,
    )
    copy_rows(
        engine,
        con,
        "cases",
        ("external_id", "customer_id"),
        case_sql,
        {},
        method=method,
        batch_rows=batch_rows,
    )
    stats.seconds = time.perf_counter() - started
    return stats


__all__ = [
    "ACCESS_KINDS",
    "RAW_COLUMNS",
    "ExtractStats",
    "LoadMethod",
    "copy_rows",
    "load_from_database",
    "scanner_extension",
]
