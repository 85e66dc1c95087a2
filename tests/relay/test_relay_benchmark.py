"""The relay benchmark's quick mode, with its memory, scale-out and mixed-load runs, runs beside
Postfix on SQLite and PostgreSQL and prints every issue-16 target with a verdict (figures are
not judged here: they belong to benchmarks/, beside Postfix's). The run exits non-zero when a
message is lost or doubled, or the ledger does not verify, so those checks are the suite's too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from postfix_harness import postfix_installed, postfix_required

from dbkit import PG_URL

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "relay.py"
TARGETS = (
    "end to end >= 1.0 x Postfix, 8 connections",
    "one connection >= 0.5 x Postfix",
    "submission p99 <= 50 ms, 8 connections",
    "submission p50 <= 5 ms, one connection",
    "<= 3 database round trips per message",
    "memory flat",
    "mixed load",
    "scale out",
    "relay_workers = 1",  # the same 8-connection target with `mailveil relay --workers`
    "relay_workers = 2",
)


def test_relay_benchmark_quick_mode_prints_every_target_on_both_backends(
    _pg_available: bool,
) -> None:
    if not postfix_installed():
        if postfix_required():
            pytest.fail("postfix is required here but not installed (scripts/ensure-debian.sh)")
        pytest.skip("postfix is not installed (scripts/ensure-debian.sh)")
    backends = "sqlite,postgresql" if _pg_available else "sqlite"
    done = subprocess.run(
        [
            *(sys.executable, str(BENCHMARK), "--quick", "--memory", "--scale-out", "--mixed"),
            *("--backends", backends, "--pg-url", PG_URL),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    verdicts = done.stdout[done.stdout.index("issue 16 targets") :]
    header = verdicts.splitlines()[2]
    for backend in backends.split(","):
        assert f"{backend}: measured" in header
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in verdicts.splitlines()
        if line.startswith("│") and "measured" not in line.split("│")[1]
    }
    for target in TARGETS:
        [cells] = [v for k, v in rows.items() if k.startswith(target)]
        assert len(cells) == 2 * len(backends.split(","))
        for backend, value, met in zip(backends.split(","), cells[::2], cells[1::2], strict=True):
            assert met in ("yes", "no"), (target, backend, value)
    # Scale-out on each backend (SQLite: processes on one host; one file cannot be shared
    # between hosts), nothing lost or doubled and the ledger one verified chain after each.
    assert done.stdout.count("scale-out: msg/s end to end") == len(backends.split(","))
    assert "ledger verifies" in done.stdout and "PROBLEMS" not in done.stdout
