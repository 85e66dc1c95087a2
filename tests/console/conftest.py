"""The console's fixtures: one seeded world and one headless Chromium for the whole session
(Debian's chromium driven by Playwright), and a tab per person that records every request
the page makes and every dialog a script would open."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
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
ARTEFACTS = Path(__file__).resolve().parent / "artefacts"
AXE = Path(__file__).resolve().parent / "oidc" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    built = build_world()
    try:
        yield built
    finally:
        built.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Tab:
    """One person's browser tab: what it requested, and any dialog a script opened."""

    world: World
    context: Any
    page: Any
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def go(self, path: str) -> Any:
        response = self.page.goto(self.world.base + path)
        assert response is not None
        return response

    def sign_in(self, key: str) -> None:
        self.go("/console/login")
        self.page.fill("#token", key)
        self.page.click("form[action='/console/login'] button[type=submit]")
        self.page.wait_for_url(re.compile(r".*/console/$"))

    def text(self) -> str:
        return str(self.page.inner_text("main"))

    def shot(self, name: str) -> None:
        ARTEFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


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


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no form token"
    return found.group(1)


def sign_in_http(client: httpx.Client, key: str) -> str:
    """Sign a plain HTTP client in; the session's CSRF token."""
    login = client.get("/console/login")
    response = client.post(
        "/console/login", data={"token": key, "csrf": csrf_of(login.text), "next": "/console/"}
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/console/").text)
