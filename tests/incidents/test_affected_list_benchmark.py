"""The affected-list benchmark's quick mode runs in the suite: it builds its ledger, writes
the list and verifies it, and exits non-zero if the list is not exact or does not verify."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow  # runs a benchmark in a subprocess
def test_the_quick_benchmark_runs_and_its_list_verifies() -> None:
    done = subprocess.run(
        [sys.executable, "affected_list.py", "--quick"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the list verifies" in done.stdout and "people/s" in done.stdout
