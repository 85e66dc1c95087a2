"""``transmit.message_bytes`` writes the usual notification directly instead of through
EmailMessage (about 2 ms a message): the bytes must be exactly what
``build_message(...).as_bytes(policy=WIRE)`` gives, for plain values (the fast path) and for
everything else (which still goes through EmailMessage). Generated values mix the fast path's
edge cases: spaces, encoded-word look-alikes, non-ASCII, long lines, CR, tabs, specials."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from mailveil.notify import transmit
from mailveil.notify.transmit import WIRE, Ready, build_message, message_bytes

PIECES = ["Gift", "bought", " ", "  ", "=?utf-8?q?x?=", "ä", "€", "\t", "(x)", "a,b", '"q"',
          "<>", ":", ";", "\\", "R1", ".", "-" * 90, "\r", "\n", "\n\n", "x" * 70, "=",
          "?"]  # fmt: skip


def _text(rng: random.Random, most: int) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, most)))


def _world(rng: random.Random) -> tuple[Any, Any, Any, Ready]:
    # Plain data holders for the three attributes the message reads (no behaviour stubbed).
    runtime = SimpleNamespace(settings=SimpleNamespace(relay_domain="relay.example"))
    send = SimpleNamespace(id=rng.randint(1, 10_000))
    template = SimpleNamespace(reason=rng.choice(["a gift from your registry", _text(rng, 4)]))
    alias = rng.choice(["ab12.cd@relay.example", "x+y@relay.example", "weird alias@relay.example"])
    subject = rng.choice(["Someone bought a gift from your registry", _text(rng, 6).strip()])
    body = rng.choice(["Hello,\n\nsomeone bought a teddy bear.\n", _text(rng, 12)])
    url = f"https://relay.example/unsubscribe/{send.id}/{rng.randint(1, 99)}/abcdef"
    return runtime, send, template, Ready(1, rng.randint(1, 10**6), alias, subject or "s",
                                          body, [], url)  # fmt: skip


def test_message_bytes_equal_the_email_library_s() -> None:
    rng = random.Random(17)
    compared = 0
    for _ in range(3000):
        runtime, send, template, item = _world(rng)
        try:
            want = build_message(runtime, send, template, item).as_bytes(policy=WIRE)
        except ValueError:
            continue  # EmailMessage refuses the value (a CR or LF in a header): not a case
        assert message_bytes(runtime, send, template, item) == want, item
        compared += 1
    assert compared > 1000


def test_the_usual_notification_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, send, template, item = _world(random.Random(1))
    item.subject, item.body = "Someone bought a gift from your registry", "Hello,\n\nR1.\n"
    item.alias = "ab12.cd@relay.example"
    template.reason = "a gift from your registry"
    want = build_message(runtime, send, template, item).as_bytes(policy=WIRE)

    def refuse(*_args: Any) -> Any:
        raise AssertionError("went through EmailMessage")

    monkeypatch.setattr(transmit, "build_message", refuse)
    assert message_bytes(runtime, send, template, item) == want
