"""The API load benchmark's quick mode runs in the suite (issue 12 §7): 1 to 128 keep-alive
clients on the real API beside a bare FastAPI endpoint; it exits non-zero on any 500 or
failed connection. The figures are printed by the benchmark, never asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.timeout(600)
def test_the_quick_load_benchmark_runs_without_500s() -> None:
    done = subprocess.run(
        [sys.executable, "api_load.py", "--quick"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=560,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no 500s, no failed connections" in done.stdout
    assert "bare req/s" in done.stdout and "    128 |" in done.stdout
