"""Every benchmark's quick mode: the smallest arguments that still run all of its code and
print its table, in seconds rather than minutes. ``run_all.py --quick`` runs them all and the
suite runs each (``tests/benchmarks/test_quick_modes.py``), so a benchmark that no longer
runs fails CI. A new benchmark needs its entry here, or the suite fails.
"""

from __future__ import annotations

QUICK: dict[str, list[str]] = {
    "abuse_intake_load.py": ["--quick"],
    "affected_list.py": ["--quick"],
    "api_load.py": ["--quick"],
    "anomalies.py": ["--n", "20000", "--seeds", "1"],
    "blast_radius.py": ["--customers", "2000", "--rows", "10000", "--culprit-aliases", "500"],
    "disclosures.py": ["--n", "2000", "--batch", "500"],
    # Its data set is cached per size in benchmarks/.cache/ (40,000 customers is its minimum).
    "employee_access.py": ["--customers", "40000", "--employees", "10", "--samples", "50"],
    "guilt_ranking.py": ["--rows", "20000", "--trials", "1", "--reporters", "50"],
    "header_bombs.py": ["--quick"],
    "intake.py": ["--reports", "60"],
    "leak_scenarios.py": ["--quick"],
    "ledger_appends.py": ["--quick"],
    "ledger_verify.py": ["--n", "2000", "--batch", "500", "--repeat", "1"],
    # The notify benchmarks run SQLite and PostgreSQL (PostgreSQL skipped if unreachable).
    "notify_delivery.py": ["--n", "100"],
    "notify_glitch.py": ["--n", "2000"],
    "notify_preview.py": ["--n", "2000"],
    # Worker processes on Redis, SQLite then PostgreSQL (60 recipients, 1 and 2 workers).
    "notify_workers.py": ["--quick"],
    "redaction.py": ["--quick"],
    # Also its memory and scale-out runs (a second host needs root: else one host only).
    "relay.py": ["--quick", "--memory", "--scale-out"],
    "relay_mixed.py": ["--quick"],
    "trackers.py": ["--quick"],
    "veto_hook.py": ["--quick"],
}
