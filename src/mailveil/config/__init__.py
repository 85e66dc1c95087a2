"""Settings: MAILVEIL_* environment variables over one optional TOML file over defaults.

Read once (``load_settings``), validated as they load, and passed in; nothing here runs at
import time. ``settings`` holds the fields (grouped by area, documented where they stand),
``loading`` reads them, ``checks`` validates them, ``reference`` writes docs/settings.md.
"""

from __future__ import annotations

from mailveil.config.checks import check_settings, nameservers
from mailveil.config.loading import load_settings
from mailveil.config.settings import (
    CONFIG_ENV,
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    Settings,
    SettingsError,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "Settings",
    "SettingsError",
    "check_settings",
    "load_settings",
    "nameservers",
]
