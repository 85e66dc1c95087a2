"""`mailveil` as a real process: `python -m mailveil` and the installed console script, with
their exit codes, stdout/stderr split, and `serve` answering on its port."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_testkit import Cli, addresses_by_external_id, open_db, tokens

from mailveil.auth.keys import Role, authenticate
from mailveil.demo.harness import free_port

pytestmark = pytest.mark.slow  # real processes (init, import, serve)

ROOT = Path(__file__).resolve().parents[2]


def script() -> list[str]:
    """The console script installed beside this interpreter (the venv's bin/)."""
    found = Path(sys.executable).with_name("mailveil")
    if not found.exists():
        on_path = shutil.which("mailveil")
        if on_path is None:
            pytest.skip("the mailveil console script is not installed")
        found = Path(on_path)
    return [str(found)]


LAUNCHERS = {"python -m mailveil": lambda: [sys.executable, "-m", "mailveil"], "script": script}


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVEIL_")}
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "PYTHONWARNINGS": "error"}, **extra)
    return env


@pytest.fixture(params=sorted(LAUNCHERS))
def launcher(request: pytest.FixtureRequest) -> list[str]:
    return LAUNCHERS[request.param]()


def mailveil(
    launcher: list[str], data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*launcher, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env=env or child_env(),
        timeout=120,
        check=False,
    )


def test_init_import_and_ledger_in_real_processes(launcher: list[str], tmp_path: Path) -> None:
    data = tmp_path / "var"
    first = mailveil(launcher, data, "init")
    assert first.returncode == 0, first.stderr
    (token,) = tokens(first.stdout)
    second = mailveil(launcher, data, "init")
    assert second.returncode == 0, second.stderr
    assert "mvk_" not in second.stdout + second.stderr

    csv = tmp_path / "in.csv"
    csv.write_text(
        "external_id,email,country\n"
        "p-1,ada.process@example.com,DE\n"
        "p-2,bert.process@,DE\n"
        "p-3,cleo.process@example.com,XX\n"
    )
    run = mailveil(launcher, data, "customers", "import", str(csv))
    assert run.returncode == 1, run.stderr
    assert run.stdout == "created 1, duplicates 0, errors 2\n"  # the result on stdout
    assert "rows not imported" in run.stderr  # the problems on stderr
    for line in ("│ 3 ", "│ 4 "):
        assert line in run.stderr
    for address in ("ada.process@", "bert.process@", "cleo.process@"):
        assert address not in run.stdout + run.stderr
    assert "Traceback" not in run.stderr

    missing = mailveil(launcher, data, "customers", "import", str(tmp_path / "nope.ndjson"))
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("nope.ndjson: no such file")

    empty = mailveil(launcher, data, "ledger", "checkpoint")
    assert empty.returncode == 1
    verify = mailveil(launcher, data, "ledger", "verify")
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout == "ledger verifies: 0 entries, 0 signed checkpoints\n"

    settings = Cli(data).settings()
    assert addresses_by_external_id(settings) == {"p-1": "ada.process@example.com"}
    with open_db(settings) as db, db() as session:
        assert authenticate(session, token).role is Role.ADMIN


def test_a_bad_setting_exits_2_without_a_traceback(launcher: list[str], tmp_path: Path) -> None:
    run = mailveil(launcher, tmp_path / "var", "init", env=child_env(MAILVEIL_API_PORT="abc"))
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr == "error: MAILVEIL_API_PORT: api_port must be int, got 'abc'\n"
    assert not (tmp_path / "var").exists()


def test_no_arguments_prints_usage(launcher: list[str]) -> None:
    run = subprocess.run(
        launcher, capture_output=True, text=True, env=child_env(), timeout=60, check=False
    )
    assert "Usage" in run.stdout + run.stderr
    assert "customers" in run.stdout + run.stderr
    assert "Traceback" not in run.stderr


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`mailveil serve` on a free loopback port; (base URL, admin token)."""
    data = tmp_path / "var"
    launcher = [sys.executable, "-m", "mailveil"]
    init = mailveil(launcher, data, "init")
    assert init.returncode == 0, init.stderr
    (token,) = tokens(init.stdout)
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [*launcher, "--data-dir", str(data), "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        # The relay starts beside the API; give it a free port too.
        env=child_env(PYTHONWARNINGS="default", MAILVEIL_RELAY_PORT=str(free_port())),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.flush()
                pytest.fail(
                    f"serve exited {proc.returncode}: {(tmp_path / 'serve.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        break
            except OSError:  # URLError, refused, or accepted but not answered yet (the
                pass  # supervisor listens before the API's process is up)
            if time.monotonic() > deadline:
                pytest.fail("serve did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()


def test_serve_answers_with_the_key_init_printed(server: tuple[str, str]) -> None:
    base, token = server
    with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:  # noqa: S310
        assert json.loads(response.read()) == {"status": "ok"}
    request = urllib.request.Request(  # noqa: S310
        f"{base}/v1/customers", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        assert response.status == 200
    anonymous = urllib.request.Request(f"{base}/v1/customers")  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(anonymous, timeout=5)  # noqa: S310
    assert denied.value.code == 401
    denied.value.close()


def test_serve_refuses_a_bad_port_option(tmp_path: Path) -> None:
    run = mailveil([sys.executable, "-m", "mailveil"], tmp_path / "var", "serve", "--port", "70000")
    assert run.returncode == 2
    assert "Invalid value for '--port'" in run.stderr
    assert "65535" in run.stderr
    assert not (tmp_path / "var").exists()
