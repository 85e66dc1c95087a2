"""Every benchmark runs in its quick mode (``benchmarks/_quick.py``) and exits 0, so none rots
unseen: a benchmark whose imports, set-up or own checks break fails the suite here. Figures
are not judged (they belong to the benchmarks, printed beside their peers)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from _quick import QUICK  # noqa: E402

SCRIPTS = sorted(
    p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_") and p.name != "run_all.py"
)
# Already run by their own tests, which also check what they print.
COVERED = {
    "affected_list.py": "tests/incidents/test_affected_list_benchmark.py",
    "api_load.py": "tests/api/test_api_load_benchmark.py",
    "leak_scenarios.py": "tests/detect/test_leak_scenarios_benchmark.py",
    "ledger_appends.py": "tests/ledger/test_ledger_appends_benchmark.py",
    "redaction.py": "tests/relay/test_redaction_benchmark.py",
    "relay.py": "tests/relay/test_relay_benchmark.py",
    "trackers.py": "tests/relay/test_relay_trackers.py",
    "veto_hook.py": "tests/relay/test_veto_benchmark.py",
}


def test_every_benchmark_has_a_quick_mode() -> None:
    assert sorted(QUICK) == SCRIPTS
    for name, test in COVERED.items():
        assert (BENCHMARKS.parent / test).read_text().count(name) >= 1


@pytest.mark.slow
@pytest.mark.timeout(1500)  # on a loaded machine some take minutes even in quick mode
@pytest.mark.parametrize("script", [s for s in SCRIPTS if s not in COVERED])
def test_quick_mode_runs(script: str) -> None:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, script, *QUICK[script]],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=1400,
        check=False,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert done.stdout.strip(), "a benchmark prints its figures"
    print(f"{script} quick mode: {seconds:.1f} s")
