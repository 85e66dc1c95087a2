"""What the console's tests share besides fixtures: where artefacts and axe-core live, a
browser tab that records its requests and dialogs, and signing a plain HTTP client in."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from console_world import World

ARTEFACTS = Path(__file__).resolve().parent / "artefacts"
AXE = Path(__file__).resolve().parent / "oidc" / "node_modules" / "axe-core" / "axe.min.js"


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
