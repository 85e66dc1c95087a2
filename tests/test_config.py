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


def test_dns_resolvers_are_named_with_an_optional_port() -> None:
    from mailveil.config import nameservers

    assert nameservers("") == ([], 53)
    assert nameservers("192.0.2.1, 192.0.2.2") == (["192.0.2.1", "192.0.2.2"], 53)
    assert nameservers("127.0.0.1:5353") == (["127.0.0.1"], 5353)
    assert nameservers("[2001:db8::1]:5353") == (["2001:db8::1"], 5353)
    s = load_settings(
        env={"MAILVEIL_DNS_NAMESERVERS": "192.0.2.1", "MAILVEIL_DNS_TIMEOUT_SECONDS": "1.5"}
    )
    assert (s.dns_nameservers, s.dns_timeout_seconds) == ("192.0.2.1", 1.5)
    for bad, message in (
        ("resolver.example", "is not an IP address"),
        ("192.0.2.1:0", "no valid port"),
        ("192.0.2.1:53, 192.0.2.2:5353", "same port"),
    ):
        with pytest.raises(SettingsError, match=message):
            load_settings(env={"MAILVEIL_DNS_NAMESERVERS": bad})
    with pytest.raises(SettingsError, match="report_pending_hours"):
        load_settings(env={}, report_pending_hours=0)
