"""Global options and settings: bad values are a clear error (exit 2) before anything is done;
commands on a data directory that was never initialised say so instead of a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_testkit import Cli

# Every command that reads settings, with arguments that would otherwise be valid.
COMMANDS = [
    ["init"],
    ["customers", "import", "customers.csv"],
    ["disclose", "--customer", "c-1", "--principal", "seller:s-1", "--purpose", "order"],
    ["aliases", "show", "abc@relay.mailveil.localhost"],
    ["aliases", "revoke", "abc@relay.mailveil.localhost", "--reason", "leak"],
    ["ledger", "verify"],
    ["ledger", "checkpoint"],
    ["ledger", "proof", "--index", "0"],
    ["keys", "rotate"],
    ["keys", "status"],
    ["keys", "retire", "--dry-run"],
    ["api-keys", "create", "--role", "admin"],
    ["api-keys", "list"],
    ["api-keys", "revoke", "abcdefghjkmn"],
    ["serve"],
]


def ids(args: list[str]) -> str:
    return " ".join(args[:2])


@pytest.fixture
def csv_file() -> Path:
    path = Path("customers.csv")
    path.write_text("external_id,email,country\nc-1,real.person@example.com,DE\n")
    return path


@pytest.mark.parametrize("args", COMMANDS, ids=ids)
def test_a_malformed_port_setting_is_a_clear_error(
    cli: Cli, csv_file: Path, args: list[str]
) -> None:
    run = cli(*args, env={"MAILVEIL_API_PORT": "abc"})
    assert run.code == 2, str(run)
    assert run.stderr.strip() == "error: MAILVEIL_API_PORT: api_port must be int, got 'abc'"
    assert run.stdout == ""
    # Nothing was done: no data directory, no database, no keys.
    assert not cli.data_dir.exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAILVEIL_API_PORT": "70000"}, "api_port must be a TCP port"),
        ({"MAILVEIL_LOG_JSON": "maybe"}, "MAILVEIL_LOG_JSON: log_json must be bool, got 'maybe'"),
        ({"MAILVEIL_RELAY_DOMAIN": "a@b.example"}, "relay_domain must be a bare domain name"),
        (
            {"MAILVEIL_CHECKPOINT_EVERY_ENTRIES": "0"},
            "checkpoint_every_entries must be >= 1",
        ),
    ],
)
def test_other_bad_settings_are_clear_errors(cli: Cli, env: dict[str, str], message: str) -> None:
    run = cli("init", env=env)
    assert run.code == 2, str(run)
    assert run.stderr.strip() == f"error: {message}"
    assert not cli.data_dir.exists()


def test_a_missing_config_file_is_a_clear_error(cli: Cli) -> None:
    run = cli.raw([*cli.global_options()[:2], "--config", "nope.toml", "init"])
    assert run.code == 2, str(run)
    assert run.stderr.strip() == "error: config file nope.toml does not exist"
    assert not cli.data_dir.exists()


def test_the_config_file_variable_is_honoured_and_checked(cli: Cli) -> None:
    run = cli("init", env={"MAILVEIL_CONFIG": "missing.toml"})
    assert run.code == 2, str(run)
    assert "config file missing.toml does not exist" in run.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[mailveil]\napi_prot = 8700\n", "unknown setting 'api_prot'"),
        ("[mailveil]\napi_port = 'x'\n", "api_port must be int, got 'x'"),
        ("[mailveil\n", "mailveil.toml:"),
    ],
)
def test_a_bad_config_file_is_a_clear_error(cli: Cli, content: str, message: str) -> None:
    Path("mailveil.toml").write_text(content)
    run = cli.raw([*cli.global_options(), "--config", "mailveil.toml", "init"])
    assert run.code == 2, str(run)
    assert run.stderr.startswith("error: ")
    assert message in run.flat
    assert not cli.data_dir.exists()


def test_a_config_file_sets_the_data_directory(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "configured"
    Path("settings.toml").write_text(f'[mailveil]\ndata_dir = "{target.as_posix()}"\n')
    run = cli.raw(["--config", "settings.toml", "init"])
    assert run.code == 0, str(run)
    assert (target / "mailveil.db").is_file()


def test_mailveil_toml_in_the_working_directory_is_read(cli: Cli) -> None:
    # The test runs in its own empty working directory (see conftest), so this file is the
    # only one in play; a developer's own ./mailveil.toml never reaches these tests.
    Path("mailveil.toml").write_text("[mailveil]\napi_port = 0\n")
    run = cli("init")
    assert run.code == 2, str(run)
    assert "api_port must be a TCP port" in run.stderr


@pytest.mark.parametrize("args", [a for a in COMMANDS if a[0] not in ("init", "serve")], ids=ids)
def test_commands_before_init_say_to_run_init(cli: Cli, csv_file: Path, args: list[str]) -> None:
    run = cli(*args)
    assert run.code == 1, str(run)
    assert run.stderr.startswith("error: "), str(run)
    assert "mailveil init" in run.flat, str(run)
    assert "Traceback" not in run.output
    assert "real.person" not in run.output
    # Nothing half-made: no empty database or data directory that `init` did not create.
    assert not cli.data_dir.exists()


def test_help_lists_the_commands(cli: Cli) -> None:
    run = cli.raw(["--help"])
    assert run.code == 0, str(run)
    for name in ("init", "serve", "customers", "disclose", "aliases", "ledger", "keys", "api-keys"):
        assert name in run.stdout


def test_an_unknown_command_is_a_usage_error(cli: Cli) -> None:
    run = cli("frobnicate")
    assert run.code == 2, str(run)
    assert "No such command" in run.flat


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense", "database_url: Could not parse SQLAlchemy URL"),
        ("mysql://bob:s3cret@127.0.0.1:1/x", "database_url: its database driver is not installed"),
        ("postgresql+nodriver://bob:s3cret@127.0.0.1/x", "database_url: Can't load plugin"),
        ("postgresql://bob:s3cret@127.0.0.1:port/x", "database_url: invalid literal for int()"),
    ],
)
@pytest.mark.parametrize("args", [["init"], ["api-keys", "list"]], ids=ids)
def test_an_unusable_database_url_is_a_setting_error(
    cli: Cli, url: str, message: str, args: list[str]
) -> None:
    run = cli.raw([*cli.global_options(), "--database-url", url, *args])
    assert run.code == 2, str(run)
    assert run.stderr.startswith(f"error: {message}"), str(run)
    assert "s3cret" not in run.output


def test_an_unreachable_database_is_a_clear_error(cli: Cli) -> None:
    url = "postgresql://bob:s3cret@127.0.0.1:1/nowhere"
    run = cli.raw([*cli.global_options(), "--database-url", url, "init"])
    assert run.code == 1, str(run)
    assert run.stderr.startswith("error: database error: ")
    assert "run `mailveil init`" not in run.flat  # that is what failed
    assert "s3cret" not in run.output
    listing = cli.raw([*cli.global_options(), "--database-url", url, "api-keys", "list"])
    assert listing.code == 1, str(listing)
    assert "database error" in listing.flat
    assert "s3cret" not in listing.output
