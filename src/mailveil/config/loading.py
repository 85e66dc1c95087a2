"""Loading: MAILVEIL_* environment variables over one optional TOML file over defaults.

Read once (``load_settings``) and passed in; nothing here runs at import time. Every setting is
checked here, the comma-separated ones parsed too, so a bad value fails the command that reads
the settings, naming the setting, not the relay or the worker that would use it later.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, get_type_hints

from mailveil.config.checks import check_settings
from mailveil.config.settings import (
    CONFIG_ENV,
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    Settings,
    SettingsError,
)


def _coerce(name: str, raw: Any, typ: Any, source: str) -> Any:
    try:
        if typ is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(text)
        if typ is int:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if typ is float:
            return float(raw)
        if typ is Path:
            return Path(str(raw))
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{source}: {name} must be {typ.__name__}, got {raw!r}") from exc


def load_settings(
    env: dict[str, str] | None = None,
    config_file: Path | None = None,
    **overrides: Any,
) -> Settings:
    """Defaults, then the TOML file (if any), then MAILVEIL_* variables, then explicit overrides."""
    environ = dict(os.environ if env is None else env)
    hints = get_type_hints(Settings)
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}

    path = config_file
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = Path(DEFAULT_CONFIG_FILE)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SettingsError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path}: {exc}") from exc
        table = data.get("mailveil", data)
        for key, raw in table.items():
            if key not in known:
                raise SettingsError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, raw, hints[key], str(path))

    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key == CONFIG_ENV:
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in known:
            values[name] = _coerce(name, raw, hints[name], key)

    for key, raw in overrides.items():
        if key not in known:
            raise SettingsError(f"unknown setting {key!r}")
        values[key] = raw

    settings = Settings(**values)
    check_settings(settings)
    return settings


__all__ = ["load_settings"]
