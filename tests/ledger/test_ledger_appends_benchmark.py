"""The ledger-append benchmark's quick mode runs on PostgreSQL and prints its table: every
process count beside the peer figure, and the ledger the runs left is one verified chain
(figures are not judged here: they belong to benchmarks/ and docs/scale.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dbkit import PG_URL

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "ledger_appends.py"


def test_ledger_appends_quick_mode_prints_each_process_count(_pg_available: bool) -> None:
    if not _pg_available:
        pytest.skip("PostgreSQL not reachable")
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--database-url", PG_URL],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split("│") for line in done.stdout.splitlines() if line.startswith("│")]
    assert sorted({(r[1].strip(), r[2].strip()) for r in rows}) == sorted(
        (str(p), str(b)) for p in (1, 2, 4, 8) for b in (1, 16)
    )
    assert all(r[7].strip() == "2,900" for r in rows)  # Tessera's per-node figure beside each
    assert "one verified chain" in done.stdout
