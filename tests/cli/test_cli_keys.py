"""`mailveil keys rotate|status|retire`: every address stays readable throughout."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from cli_testkit import Cli, addresses_by_external_id, assert_no_address

from mailveil.config import Settings

ADDRESSES = {
    "k-1": "xaver.key@example.com",
    "k-2": "yara.key@example.org",
    "k-3": "zeno.key@example.net",
}
ROTATED = re.compile(
    r"new key-encryption key (\S+); (\d+) data key\(s\) re-wrapped; new data key ([0-9a-f]+)"
)


@pytest.fixture
def customers(cli: Cli, cli_settings: Settings) -> dict[str, str]:
    Path("k.csv").write_text(
        "external_id,email,country\n" + "".join(f"{k},{a},DE\n" for k, a in ADDRESSES.items())
    )
    cli.ok("customers", "import", "k.csv")
    assert addresses_by_external_id(cli_settings) == ADDRESSES
    return ADDRESSES


def status(cli: Cli) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(cli.ok("keys", "status").stdout)
    return info


def kek_files(cli: Cli) -> set[str]:
    return {p.name for p in (cli.data_dir / "keys").glob("address-kek-*.key")}


def test_status_lists_keys_and_rows(cli: Cli, customers: dict[str, str]) -> None:
    info = status(cli)
    assert len(info["keks"]) == 1
    assert info["current_kek"] == info["keks"][0]
    (dek,) = info["deks"]
    assert dek["active"] is True
    assert dek["kek_id"] == info["current_kek"]
    assert dek["rows"] == len(customers)


def test_rotate_rewraps_and_keeps_every_address_readable(
    cli: Cli, cli_settings: Settings, customers: dict[str, str]
) -> None:
    before = status(cli)
    run = cli.ok("keys", "rotate")
    match = ROTATED.search(run.flat)
    assert match, str(run)
    new_kek, rewrapped, new_dek = match.group(1), int(match.group(2)), match.group(3)
    assert rewrapped == 1
    assert new_kek not in before["keks"]
    assert f"address-kek-{new_kek}.key" in kek_files(cli)
    key_file = cli.data_dir / "keys" / f"address-kek-{new_kek}.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The old KEK wraps nothing any more: the command says it may be retired.
    assert "no longer referenced" in run.flat
    assert before["current_kek"] in run.flat
    assert_no_address(run, list(customers.values()))

    after = status(cli)
    assert after["current_kek"] == new_kek
    by_id = {d["id"]: d for d in after["deks"]}
    old_dek = before["deks"][0]["id"]
    assert by_id[old_dek] == {**by_id[old_dek], "kek_id": new_kek, "active": False, "rows": 3}
    assert by_id[new_dek]["active"] is True and by_id[new_dek]["rows"] == 0
    assert addresses_by_external_id(cli_settings) == customers

    # New customers go under the new data key, old ones stay readable.
    Path("more.csv").write_text("external_id,email,country\nk-4,abel.new@example.com,DE\n")
    cli.ok("customers", "import", "more.csv")
    assert addresses_by_external_id(cli_settings) == {**customers, "k-4": "abel.new@example.com"}
    assert {d["id"]: d["rows"] for d in status(cli)["deks"]}[new_dek] == 1


def test_rotate_reencrypt_moves_every_row_to_the_new_key(
    cli: Cli, cli_settings: Settings, customers: dict[str, str]
) -> None:
    cli.ok("keys", "rotate")
    run = cli.ok("keys", "rotate", "--reencrypt", "--batch", "2")
    match = ROTATED.search(run.flat)
    assert match, str(run)
    assert int(match.group(2)) == 2  # the first and second data keys
    assert f"{len(customers)} address(es) re-encrypted" in run.flat
    new_dek = match.group(3)
    info = status(cli)
    rows = {d["id"]: d["rows"] for d in info["deks"]}
    assert rows[new_dek] == len(customers)
    assert sum(rows.values()) == len(customers)
    assert addresses_by_external_id(cli_settings) == customers
    assert_no_address(run, list(customers.values()))


def test_retire_dry_run_then_retire(
    cli: Cli, cli_settings: Settings, customers: dict[str, str]
) -> None:
    first = status(cli)
    cli.ok("keys", "rotate", "--reencrypt")
    files_before = kek_files(cli)
    assert len(files_before) == 2

    dry = cli.ok("keys", "retire", "--dry-run")
    old_dek = first["deks"][0]["id"]
    old_kek = first["current_kek"]
    assert dry.stdout.splitlines() == [
        f"would delete data keys: {old_dek}",
        f"would delete key files: {old_kek}",
    ]
    # A dry run changes nothing.
    assert kek_files(cli) == files_before
    assert {d["id"] for d in status(cli)["deks"]} >= {old_dek}

    run = cli.ok("keys", "retire")
    assert run.stdout.splitlines() == [
        f"deleted data keys: {old_dek}",
        f"deleted key files: {old_kek}",
    ]
    assert kek_files(cli) == files_before - {f"address-kek-{old_kek}.key"}
    assert old_dek not in {d["id"] for d in status(cli)["deks"]}
    assert addresses_by_external_id(cli_settings) == customers

    again = cli.ok("keys", "retire", "--dry-run")
    assert again.stdout.splitlines() == [
        "would delete data keys: none",
        "would delete key files: none",
    ]


def test_retire_keeps_a_data_key_that_rows_still_use(
    cli: Cli, cli_settings: Settings, customers: dict[str, str]
) -> None:
    first = status(cli)
    cli.ok("keys", "rotate")  # without --reencrypt: rows stay on the first data key
    run = cli.ok("keys", "retire")
    assert run.stdout.splitlines()[0] == "deleted data keys: none"
    # Its old KEK file goes: the data key is now wrapped under the new KEK.
    assert run.stdout.splitlines()[1] == f"deleted key files: {first['current_kek']}"
    assert first["deks"][0]["id"] in {d["id"] for d in status(cli)["deks"]}
    assert addresses_by_external_id(cli_settings) == customers


def test_rotate_twice_then_retire_on_an_empty_database(cli: Cli, cli_settings: Settings) -> None:
    cli.ok("keys", "rotate")
    cli.ok("keys", "rotate")
    assert len(kek_files(cli)) == 3
    cli.ok("keys", "retire")
    assert len(kek_files(cli)) == 1
    assert status(cli)["keks"] == [p[len("address-kek-") : -len(".key")] for p in kek_files(cli)]


def test_a_batch_of_zero_is_a_usage_error_and_rotates_nothing(
    cli: Cli, customers: dict[str, str]
) -> None:
    before = kek_files(cli)
    run = cli("keys", "rotate", "--reencrypt", "--batch", "0")
    assert run.code == 2, str(run)
    assert "--batch" in run.flat
    assert kek_files(cli) == before


def test_a_key_file_readable_by_others_is_refused(cli: Cli, customers: dict[str, str]) -> None:
    (kek,) = (cli.data_dir / "keys").glob("address-kek-*.key")
    kek.chmod(0o644)
    for args in (["keys", "status"], ["keys", "rotate"], ["customers", "import", "k.csv"]):
        run = cli(*args)
        assert run.code == 1, str(run)
        assert "is readable by others" in run.flat
        assert "chmod 600" in run.flat
    assert len(kek_files(cli)) == 1
