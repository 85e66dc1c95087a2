"""The veto-hook benchmark's quick mode runs and prints its table (figures are not judged
here: they belong to benchmarks/, beside their no-hook peer)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "veto_hook.py"


def test_veto_benchmark_quick_mode_prints_every_variant() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    for variant in ("no hook", "1 ms", "40 ms", "added p50 ms"):
        assert variant in done.stdout
