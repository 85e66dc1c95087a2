"""The developer's fast subset (`make test-fast`): tests measured slow are marked ``slow``.

``tests/durations.json`` holds each test's measured time (setup, call and teardown) from a full
run; a test that took ``SLOW_SECONDS`` or more there is marked ``slow`` at collection, beside the
tests marked by hand. A new test counts as fast until the file is measured again:

    make test PYTEST_ARGS="--record-durations"     # rewrites tests/durations.json

(`make test` is the gate and runs everything either way.)
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")
SLOW_SECONDS = 0.5


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-durations",
        action="store_true",
        help=f"write each test's time to {DURATIONS.name} at the end (a full run)",
    )


def _measured() -> dict[str, float]:
    try:
        data = json.loads(DURATIONS.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {str(k): float(v) for k, v in data.items()}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    measured = _measured()
    for item in items:
        if measured.get(item.nodeid, 0.0) >= SLOW_SECONDS:
            item.add_marker(pytest.mark.slow)


class _Recorder:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        rounded = {k: round(v, 3) for k, v in sorted(self.seconds.items())}
        DURATIONS.write_text(json.dumps(rounded, indent=0) + "\n", encoding="utf-8")


def pytest_configure(config: pytest.Config) -> None:
    # Under xdist the controller sees every worker's reports; workers record nothing.
    if config.getoption("--record-durations") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_Recorder(), "mailveil-durations")
