"""Fixtures for the notification tests: ``notify_db`` (a fresh migrated database per test,
SQLite and PostgreSQL) and ``notify_env`` (that database with the relay and a sink), from the
kit (``notify_kit``), registered here once instead of in each test module."""

from __future__ import annotations

from notify_kit import notify_db, notify_env

__all__ = ["notify_db", "notify_env"]
