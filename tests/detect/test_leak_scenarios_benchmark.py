"""leak_scenarios' quick mode runs in the suite: two small marketplaces through the real
detection code with the adversary on; the run says which seeds are tuning and which held out,
keeps its ledgers, and ``--rescore`` reruns the anomaly job on them with the same figures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "leak_scenarios.py", *args],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _anomaly_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if re.match(r"│ (0\.5|1|2) +│", line)]


@pytest.mark.timeout(1800)
def test_quick_scenarios_accuse_no_innocent_and_rescore_agrees(tmp_path: Path) -> None:
    out = _run("--quick", "--keep", str(tmp_path))
    assert "seeds: tuning 1-2; held out none" in out
    assert "zero false accusations (with framing on): PASS" in out
    assert sorted(q.name for q in tmp_path.iterdir()) == [
        "seed-1.db",
        "seed-1.json",
        "seed-2.db",
        "seed-2.json",
    ]
    again = _run("--rescore", str(tmp_path))
    assert "zero false accusations (with framing on): PASS" in again
    assert _anomaly_rows(again) and _anomaly_rows(again) == _anomaly_rows(out)
    bad = subprocess.run(
        [sys.executable, "leak_scenarios.py", "--seeds", "9-3"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and "--seeds: '9-3' runs backwards" in bad.stderr
