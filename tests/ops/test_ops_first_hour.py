"""The first hour with mailveil (issue 14's stumbles): `make` shows progress while it
installs, help shows no `<bool>` beside flags, a port already in use is one clear error
naming it, the README's relay recipe works as written, and the demo leaves its files in a
folder it names."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mailveil.demo.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
MAILVEIL = Path(sys.executable).with_name("mailveil")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVEIL_")}
    env.update(MAILVEIL_DATA_DIR=str(tmp_path / "var"), NO_COLOR="1", COLUMNS="200", **extra)
    return env


def test_make_shows_progress_while_installing_and_keeps_pips_failure(tmp_path: Path) -> None:
    """The venv recipe run by make with a stand-in pip (the real one would fetch the world)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    stub = venv / "bin" / "python"
    stub.write_text(
        '#!/bin/sh\ncase "$*" in *upgrade*) exit 0;; esac\n'
        "echo 'Collecting fastapi'; echo 'Requirement already satisfied: idna'\n"
        "echo 'Installing collected packages: fastapi'; echo 'Successfully installed fastapi-1'\n"
        "exit ${STUB_EXIT:-0}\n"
    )
    stub.chmod(0o755)

    def make(**env: str) -> subprocess.CompletedProcess[str]:
        # Under `make test` this runs as a sub-make: it must not inherit the outer make's
        # flags, nor print the directory it enters.
        inherited = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")
        outer = {k: v for k, v in os.environ.items() if k not in inherited}
        return subprocess.run(
            ["make", "--no-print-directory", "-B", f"VENV={venv}", f"{venv}/.installed"],
            cwd=ROOT, capture_output=True, text=True, env={**outer, **env}, timeout=60,
        )  # fmt: skip

    done = make()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"Setting up {venv}") and "a few minutes" in lines[0]
    assert "  fetching fastapi" in lines and "  installing..." in lines
    assert lines[-1] == f"{venv} is ready."
    assert "Requirement already satisfied" not in done.stdout  # progress, not noise
    failed = make(STUB_EXIT="3")
    assert failed.returncode != 0 and "is ready" not in failed.stdout


def test_help_shows_no_bool_beside_flags() -> None:
    for args in (["serve"], ["quarantine", "list"], ["doctor"], ["demo"]):
        done = subprocess.run(
            [str(MAILVEIL), *args, "--help"], capture_output=True, text=True,
            env={**os.environ, "COLUMNS": "200"}, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "<bool>" not in done.stdout, done.stdout
        assert "--help" in done.stdout
    assert (
        "--relay"
        in subprocess.run(
            [str(MAILVEIL), "serve", "--help"], capture_output=True, text=True, timeout=120
        ).stdout
    )


def test_a_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        api = subprocess.run(
            [str(MAILVEIL), "serve", "--port", str(port)], capture_output=True, text=True,
            env=_env(tmp_path), timeout=300,
        )  # fmt: skip
        relay = subprocess.run(
            [str(MAILVEIL), "serve", "--port", str(free_port())], capture_output=True,
            text=True, env=_env(tmp_path, MAILVEIL_RELAY_PORT=str(port)), timeout=300,
        )  # fmt: skip
    assert api.returncode == 1
    assert f"the API cannot listen on 127.0.0.1:{port}: address already in use" in api.stderr
    assert f"port {port} is taken" in api.stderr and "api_port" in api.stderr
    assert relay.returncode == 1, relay.stderr
    assert f"the relay cannot listen on 127.0.0.1:{port}" in relay.stderr
    assert "set relay_port" in relay.stderr
    for done in (api, relay):
        assert "Traceback" not in done.stderr
        assert "never awaited" not in done.stderr + done.stdout


def _section(title: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(title, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def test_the_readme_relay_recipe_runs_as_written(tmp_path: Path) -> None:
    sink_cmd, serve_cmd, script = _section("### Try the relay")
    quickstart = next(b for b in _section("## Quick start") if "export TOKEN" in b)
    api_port, relay_port, sink_port = free_port(), free_port(), free_port()

    def ports(text: str) -> str:
        return text.replace("127.0.0.1:2526", f"127.0.0.1:{sink_port}").replace(
            "127.0.0.1:2525", f"127.0.0.1:{relay_port}"
        )

    # The serve command's settings, as the README gives them, with this test's ports.
    settings = dict(re.findall(r"(MAILVEIL_[A-Z_]+)=(\S+)", serve_cmd))
    assert settings["MAILVEIL_SMARTHOST_PORT"] == "2526" and "make run" in serve_cmd
    settings["MAILVEIL_SMARTHOST_PORT"] = str(sink_port)
    env = _env(
        tmp_path, MAILVEIL_API_PORT=str(api_port), MAILVEIL_RELAY_PORT=str(relay_port), **settings
    )
    sink = subprocess.Popen(
        ["bash", "-c", ports(sink_cmd.strip())], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    init = subprocess.run(
        [str(MAILVEIL), "init"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    token = re.search(r"mvk_[A-Za-z0-9_-]+", init.stdout)
    assert token is not None
    server = subprocess.Popen(
        [str(MAILVEIL), "serve"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        api = f"http://127.0.0.1:{api_port}"
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{api}/healthz", timeout=1):  # noqa: S310
                    break
            except OSError:
                time.sleep(0.2)
        both = quickstart.replace("export TOKEN=mvk_...", f"export TOKEN={token[0]}")
        both = both.replace("export API=http://127.0.0.1:8700", f"export API={api}")
        both += "\n" + ports(script)
        run = subprocess.run(
            ["bash", "-c", both], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL,  # swaks asks on stdin for what is missing: never wait
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
        os.killpg(sink.pid, signal.SIGTERM)
        received, _ = sink.communicate(timeout=30)
    assert "<-  250 2.0.0 Message accepted" in run.stdout, run.stdout + run.stderr
    assert "ada@example.com" not in run.stdout + run.stderr  # the seller's side
    assert "Your parcel is on its way" in received and "It leaves today." in received
    assert "DKIM-Signature:" in received and "d=relay.mailveil.localhost" in received
    sender = re.search(r"^From: (.*)$", received, flags=re.M)
    assert sender is not None and "@relay.mailveil.localhost" in sender[1], received
    assert "shop@acme-toys.example" not in received


@pytest.mark.slow
def test_the_demo_leaves_its_files_in_a_folder_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = subprocess.run(
        [str(MAILVEIL), "demo", "--customers", "60"], cwd=tmp_path, capture_output=True,
        text=True, env={**_env(tmp_path), "COLUMNS": "120"}, timeout=900,
    )  # fmt: skip
    folder = tmp_path / "mailveil-demo"
    assert f"The demo's files go to {folder}" in done.stdout, done.stdout[-3000:] + done.stderr
    files = sorted(p.name for p in folder.iterdir())
    assert any(f.endswith(".html") for f in files) and any(f.endswith(".pdf") for f in files)
    assert f"Open them in {folder}: {', '.join(files)}" in " ".join(done.stdout.split())


def test_serve_writes_only_json_lines(tmp_path: Path) -> None:
    """`mailveil serve` as deployed: uvicorn's own lines, the relay's and the access log all
    go through the one JSON pipeline, to stderr and to the log file."""
    api_port, relay_port = free_port(), free_port()
    env = _env(tmp_path, MAILVEIL_API_PORT=str(api_port), MAILVEIL_RELAY_PORT=str(relay_port))
    server = subprocess.Popen(
        [str(MAILVEIL), "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        for _ in range(900):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=1):
                    break
            except OSError:
                assert server.poll() is None, "serve stopped"
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=10):
            pass
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), lines[:5]
    records = [json.loads(line) for line in lines]
    assert any(r["logger"] == "uvicorn.error" for r in records)
    assert any(r["event"] == "http_request" and r["route"] == "/metrics" for r in records)
    logged = (tmp_path / "var" / "logs" / "mailveil.log").read_text(encoding="utf-8")
    assert all(line.startswith("{") for line in logged.splitlines() if line.strip())
