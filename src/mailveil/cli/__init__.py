"""The `mailveil` command: a thin Typer shell over the areas' functions."""

from __future__ import annotations

from mailveil.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
