"""docs/settings.md is written from the code, and every setting is checked when it loads."""

from dataclasses import fields
from pathlib import Path

import pytest

from mailveil.config import Settings, SettingsError, load_settings
from mailveil.config.reference import groups, main, render

ROOT = Path(__file__).resolve().parent.parent


def test_committed_reference_is_what_the_code_generates() -> None:
    committed = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert committed == render(), "run: python -m mailveil.config.reference --write"


def test_every_setting_is_in_one_group_with_its_env_variable() -> None:
    placed = [name for group in groups() for block in group.blocks for name in block.names]
    assert sorted(placed) == sorted(f.name for f in fields(Settings))
    assert len(placed) == len(set(placed))
    page = render()
    for name in placed:
        assert f"`MAILVEIL_{name.upper()}`" in page
    # the comment above a setting is its documentation
    relay = next(g for g in groups() if g.title.startswith("relay messaging policy"))
    critical = next(b for b in relay.blocks if "relay_critical_reasons" in b.names)
    assert "despite an opt-out" in critical.text


def test_check_mode_fails_on_a_stale_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "settings.md").write_text("stale\n", encoding="utf-8")
    assert main(["--check"]) == 1
    assert main(["--write"]) == 0
    assert main(["--check"]) == 0


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("RELAY_REASONS_BY_STATUS", "placed=refund; lost=refund", "relay_reasons_by_status"),
        ("RELAY_CRITICAL_REASONS", "legal,Not A Slug", "relay_critical_reasons"),
        ("RELAY_EMPLOYEE_REASONS", "support,x y", "relay_employee_reasons"),
        ("RELAY_SERVICE_REASONS", "notification,!", "relay_service_reasons"),
        ("RELAY_ATTACHMENT_TYPES", "application/pdf,pdf", "relay_attachment_types"),
        ("RELAY_MAX_ATTACHMENT_BYTES", "-1", "relay_max_attachment_bytes"),
        ("TRACKERS_EXTRA_HOSTS", "ok.example,https://bad.example/x", "trackers_extra_hosts"),
        ("LIFECYCLE_WINDOWS", "placed=x", "lifecycle_windows"),
        ("NOTIFY_STAGES", "0.5,0.1,1", "notify_stages"),
        ("LOG_LEVEL", "chatty", "log_level"),
    ],
)
def test_mini_languages_fail_at_load_naming_the_setting(
    variable: str, value: str, named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(env={f"MAILVEIL_{variable}": value})
