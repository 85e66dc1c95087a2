from pathlib import Path

import pytest

from mailveil.config import SettingsError, load_settings


def test_defaults_use_var_and_sqlite() -> None:
    s = load_settings(env={})
    assert s.data_dir == Path("var")
    assert s.db_url == "sqlite:///var/mailveil.db"
    assert (s.api_host, s.api_port) == ("127.0.0.1", 8700)


def test_environment_overrides_file_which_overrides_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text('[mailveil]\napi_port = 9000\nrelay_domain = "file.example"\n')
    s = load_settings(env={"MAILVEIL_API_PORT": "9100"}, config_file=cfg)
    assert s.api_port == 9100  # environment wins
    assert s.relay_domain == "file.example"  # file beats default


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text("seller_contact_window_days = 30\n")
    s = load_settings(env={"MAILVEIL_CONFIG": str(cfg)})
    assert s.seller_contact_window_days == 30


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAILVEIL_API_PORT": "eighty"}, "MAILVEIL_API_PORT: api_port must be int"),
        ({"MAILVEIL_API_PORT": "70000"}, "api_port must be a TCP port"),
        ({"MAILVEIL_LOG_JSON": "maybe"}, "log_json must be bool"),
        ({"MAILVEIL_RELAY_DOMAIN": "a@b"}, "relay_domain must be a bare domain"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env=env)


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text("relay_domian = 'typo.example'\n")
    with pytest.raises(SettingsError, match="unknown setting 'relay_domian'"):
        load_settings(env={}, config_file=cfg)


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text("api_port = = 3\n")
    with pytest.raises(SettingsError, match=r"m\.toml"):
        load_settings(env={}, config_file=cfg)
