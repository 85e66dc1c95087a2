"""The redaction benchmark's quick mode runs and prints its table (figures are not judged
here: they belong to benchmarks/, beside their floor)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "redaction.py"


@pytest.mark.slow  # runs a benchmark in a subprocess
def test_redaction_benchmark_quick_mode_prints_every_shape() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for shape in ("2 KB text", "30 KB HTML, no address", "split by markup", "200 KB PDF"):
        assert shape in done.stdout
