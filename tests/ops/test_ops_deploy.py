"""Deployment artefacts: the systemd units pass `systemd-analyze verify`, and the wheel built
from this tree installs into a clean virtual environment and runs from there (its package
data included: migrations, policies, templates)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
INSTALLED_AS = "/opt/mailveil/venv/bin/mailveil"


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    units = sorted(UNITS.glob("*.service"))
    assert {u.name for u in units} == {
        "mailveil-api.service", "mailveil-relay.service", "mailveil-worker@.service",
    }  # fmt: skip
    # verify checks that ExecStart's program exists: point it at this checkout's command.
    here = Path(sys.executable).with_name("mailveil")
    assert here.exists()
    names = []
    for unit in units:
        body = unit.read_text(encoding="utf-8")
        assert INSTALLED_AS in body, unit.name
        name = unit.name.replace("@.service", "@1.service")  # an instance of the template
        (tmp_path / name).write_text(body.replace(INSTALLED_AS, str(here)), encoding="utf-8")
        names.append(str(tmp_path / name))
    done = subprocess.run(
        [analyze, "verify", "--man=no", *names], capture_output=True, text=True, timeout=120
    )
    # Unknown keys and bad values are only warnings (exit 0): any output is a failure.
    assert done.returncode == 0 and done.stdout.strip() == "" and done.stderr.strip() == "", (
        done.stdout + done.stderr
    )


@pytest.mark.slow
def test_the_wheel_installs_into_a_clean_venv_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    [wheel] = dist.glob("mailveil-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "mailveil/db/migrations/env.py",
        "mailveil/db/migrations/versions/0001_initial_schema.py",
        "mailveil/notify/words.txt",
        "mailveil/py.typed",
    ):
        assert needed in names, needed
    assert any(n.startswith("mailveil/policy/policies/") for n in names)
    assert any(n.startswith("mailveil/console/templates/") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The wheel itself goes in with pip; its dependencies come from this environment's
    # site-packages through a .pth line (installing scipy and friends again would take
    # minutes and prove nothing about our packaging). Nothing of this checkout is on the path.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVEIL_")}
    env.pop("PYTHONPATH", None)
    where = subprocess.run(
        [str(python), "-c", "import mailveil; print(mailveil.__file__)"],
        check=True, capture_output=True, text=True, env=env, cwd=tmp_path,
    ).stdout.strip()  # fmt: skip
    assert where.startswith(str(venv)), where
    command = venv / "bin" / "mailveil"
    data = tmp_path / "var"
    init = subprocess.run(
        [str(command), "--data-dir", str(data), "init"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr
    assert "database schema at the latest migration" in init.stdout
    doctor = subprocess.run(
        [str(command), "--data-dir", str(data), "doctor", "--offline", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert '"item": "migrated"' in doctor.stdout, doctor.stdout + doctor.stderr
    assert '"verdict": "fail"' not in doctor.stdout, doctor.stdout
