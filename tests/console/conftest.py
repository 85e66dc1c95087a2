"""The console's fixtures: one seeded world for the session, one headless Chromium per
browser module (Debian's chromium driven by Playwright), and a tab per person that records
every request the page makes and every dialog a script would open."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from console_kit import Tab
from console_world import World, build_world

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    built = build_world()
    try:
        yield built
    finally:
        built.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: Playwright's sync API keeps an asyncio loop marked running
    # in the main thread while it is open, and later tests call asyncio.run().
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def tab(world: World, browser: Any) -> Iterator[Any]:
    """A factory of fresh tabs (each its own cookie jar); closed after the test."""
    opened: list[Any] = []

    def make() -> Tab:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        made = Tab(world, context, page)
        page.on("request", lambda r: made.requests.append(r.url))
        page.on("dialog", lambda d: (made.dialogs.append(d.message), d.dismiss()))
        opened.append(context)
        return made

    yield make
    for context in opened:
        context.close()


@pytest.fixture
def http(world: World) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=world.base, follow_redirects=False, timeout=30) as client:
        yield client
