"""The README's quick start, run as written against a real `mailveil serve`.

Only what cannot be the same on a test machine changes: the token (printed by init), and the
data directory and ports, passed through MAILVEIL_* variables rather than by editing the
commands. A README that drifts from the product fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mailveil.demo.harness import free_port

pytestmark = pytest.mark.slow  # a real mailveil serve, as the README runs it

ROOT = Path(__file__).resolve().parents[1]
MAILVEIL = Path(sys.executable).with_name("mailveil")


def quickstart_script() -> str:
    """The shell block of the Quick start section that follows `make run`."""
    section = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    script = next(b for b in blocks if "export TOKEN" in b)
    assert "make run" in section
    return script


def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    api_port, relay_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVEIL_")}
    env.update(
        MAILVEIL_DATA_DIR=str(tmp_path / "var"),
        MAILVEIL_API_PORT=str(api_port),
        MAILVEIL_RELAY_PORT=str(relay_port),
        NO_COLOR="1",
        COLUMNS="200",
    )
    init = subprocess.run(
        [str(MAILVEIL), "init"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    token = re.search(r"mvk_[A-Za-z0-9_-]+", init.stdout)
    assert token is not None, init.stdout
    server = subprocess.Popen(
        [str(MAILVEIL), "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        api = f"http://127.0.0.1:{api_port}"
        ready_by = time.monotonic() + 60  # a loaded machine imports the CLI slowly
        while time.monotonic() < ready_by:
            try:
                with urllib.request.urlopen(f"{api}/healthz", timeout=1):  # noqa: S310
                    break
            except OSError:
                time.sleep(0.1)
        script = quickstart_script().replace("export TOKEN=mvk_...", f"export TOKEN={token[0]}")
        script = script.replace("export API=http://127.0.0.1:8700", f"export API={api}")
        run = subprocess.run(
            ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        server.terminate()
        server.wait(timeout=20)
    out = run.stdout
    assert '"status":"allowed"' in out and "@relay.mailveil.localhost" in out
    assert "urn:mailveil:problem:policy-denied" in out
    assert '"tree_size":' in out and '"proof":' in out
    assert "created 3, duplicates 1, errors 1" in out
    assert "ledger verifies" in out
    assert "ada@example.com" not in out and "grace.hopper" not in out + run.stderr
