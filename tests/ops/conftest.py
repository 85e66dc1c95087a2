"""Fixtures for the ops tests: ``notify_db``, the notification kit's fresh migrated database
per test (SQLite and PostgreSQL), for the tests that drive its world (``ops_kit``).

The kit lives in tests/notify (ops_kit puts that folder on ``sys.path``); its fixture is
registered here once instead of in each test module.
"""

from __future__ import annotations

from ops_kit import notify_kit

notify_db = notify_kit.notify_db
