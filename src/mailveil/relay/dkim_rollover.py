"""DKIM selector rollover with overlap (M3AAWG's DKIM key rotation practice).

``start_rollover`` makes keys under new selectors and records them in
``keys_dir/dkim-rollover.json`` with the time the relay starts signing with them: now plus
``dkim_overlap_hours``, so their DNS records are published (and cached) before any message
needs them. Until then the relay keeps signing with the old selectors; from then on with the
new ones, while the old records stay published so messages signed before the switch still
verify. ``retire_rollover`` removes selectors whose successor has signed for the overlap too
(their key files are deleted: print and withdraw their DNS records first).

Without the state file the selectors are the settings' (``dkim_selector_ed25519``,
``dkim_selector_rsa``); with it, the file decides. Every relay process re-reads it every
``key_refresh_seconds`` (``DkimKeyring``), so no restart is needed.
"""

from __future__ import annotations

import contextlib
import json
import time

from mailveil.config import Settings
from mailveil.keyfiles import write_secret

# Reading the state (which generation signs now) is dkim's own, since DkimSigner.load needs
# it; this module writes the state.
from mailveil.relay.dkim import (
    STATE_FILE,
    DkimError,
    DkimSigner,
    Generation,
    _check_selector,
    _new_ed25519,
    _new_rsa,
    _state_path,
    generations,
    load_signer,
)


def _save(settings: Settings, gens: list[Generation]) -> None:
    text = json.dumps([g.__dict__ for g in gens], indent=2) + "\n"
    write_secret(_state_path(settings), text.encode("utf-8"), overwrite=True)


def start_rollover(
    settings: Settings, ed25519_selector: str, rsa_selector: str, now: float | None = None
) -> Generation:
    """New keys under new selectors, signing from now + dkim_overlap_hours."""
    for sel in (ed25519_selector, rsa_selector):
        _check_selector(sel)
    gens = generations(settings)
    used = {s for g in gens for s in (g.ed25519, g.rsa)}
    if ed25519_selector in used or rsa_selector in used:
        raise DkimError("a new DKIM selector must differ from every selector in use")
    d = settings.keys_dir
    for path, make in (
        (d / f"dkim-{ed25519_selector}.ed25519.key", _new_ed25519),
        (d / f"dkim-{rsa_selector}.rsa.pem", _new_rsa),
    ):
        if path.exists():
            raise DkimError(f"{path.name} already exists")
        write_secret(path, make())
    moment = time.time() if now is None else now
    gen = Generation(ed25519_selector, rsa_selector, moment + settings.dkim_overlap_hours * 3600)
    _save(settings, [*gens, gen])
    return gen


def retire_rollover(settings: Settings, now: float | None = None) -> list[str]:
    """Drop generations whose successor has signed for dkim_overlap_hours; delete their key
    files. Returns the selectors retired (withdraw their DNS records)."""
    moment = time.time() if now is None else now
    gens = generations(settings)
    overlap = settings.dkim_overlap_hours * 3600
    keep_from = 0
    for i in range(1, len(gens)):
        if gens[i].signs_from + overlap <= moment:
            keep_from = i
    retired = gens[:keep_from]
    if not retired:
        return []
    _save(settings, gens[keep_from:])
    d = settings.keys_dir
    for g in retired:
        for path in (d / f"dkim-{g.ed25519}.ed25519.key", d / f"dkim-{g.rsa}.rsa.pem"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return [s for g in retired for s in (g.ed25519, g.rsa)]


class DkimKeyring:
    """The relay's signer, re-read every ``key_refresh_seconds`` (and when a generation's
    time to sign comes)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._checked = 0.0
        self._signer = load_signer(settings)
        self._checked = time.monotonic()

    @property
    def signer(self) -> DkimSigner:
        now = time.monotonic()
        if now - self._checked >= self._settings.key_refresh_seconds:
            self._signer = load_signer(self._settings)
            self._checked = now
        return self._signer

    def refresh(self) -> None:
        self._checked = 0.0


__all__ = [
    "STATE_FILE",
    "DkimKeyring",
    "Generation",
    "generations",
    "load_signer",
    "retire_rollover",
    "start_rollover",
]
