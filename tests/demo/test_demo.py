"""The demo runs in the test suite: both acts through the real relay, and its checks hold."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from mailveil.demo.story import run_demo

pytestmark = pytest.mark.slow  # the whole demo, both acts


def test_the_demo_tells_the_story() -> None:
    out = io.StringIO()
    report = run_demo(Console(file=out, width=120, force_terminal=False), customers=120)
    text = out.getvalue()
    assert report.ok, (report.failures, text)
    assert report.leak is not None and report.leak.canaries_in_export > 0
    assert "Mal Lory" in text and "Bargain Barn" in text
    assert "@mail.example" not in text  # no customer's real address on screen
