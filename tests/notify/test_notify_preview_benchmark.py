"""The preview benchmark's quick mode runs in the suite: it prints the preview beside the bare
SQL join of the same tables, and exits non-zero if the preview's eligible count disagrees
with the join's count of gift holders (figures are not judged here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_the_quick_preview_benchmark_runs_and_agrees_with_the_join() -> None:
    done = subprocess.run(
        [sys.executable, "notify_preview.py", "--quick"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "preview / bare join" in done.stdout and "peer: bare SQL join" in done.stdout
