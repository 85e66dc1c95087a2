"""The `mailveil` command: a thin Typer shell over the areas' functions."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typer import Typer


def main() -> None:
    if sys.argv[1:2] == ["witness"]:
        # A witness runs on its own host and needs none of the product: start it without
        # importing every area (seconds of scipy and scikit-learn).
        from mailveil.cli.witness import standalone

        standalone()
        return
    from mailveil.cli.app import command

    command()()


def __getattr__(name: str) -> Any:
    if name == "app":
        from mailveil.cli.app import app

        return app
    raise AttributeError(name)


app: Typer

__all__ = ["app", "main"]
