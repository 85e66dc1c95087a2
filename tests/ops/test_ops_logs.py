"""Structured logs: API requests, relay transactions, send steps and detection runs each get
one JSON line with what an operator follows them by, and no real address of the test world
reaches the log file, whatever path the address took (API bodies, SMTP envelopes, mail)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from ops_kit import NEW_CUSTOMER, STRANGER, drive_slice, json_lines, notify_kit, shared_runtime

from logscan import logging_an_address
from mailveil.api.app import create_app
from mailveil.config import Settings, load_settings
from mailveil.logs import configure_logging, get_logger, reset_logging, scrub

kit = notify_kit


@pytest.fixture
def logged_env(settings: Settings, notify_db: object) -> Iterator[kit.NotifyEnv]:
    env_settings = kit.notify_settings(settings, log_json=True, log_level="info")
    configure_logging(env_settings)
    try:
        yield from kit.open_env(env_settings, notify_db)  # type: ignore[arg-type]
    finally:
        reset_logging()


def test_a_whole_slice_logs_json_lines_without_any_real_address(
    logged_env: kit.NotifyEnv,
) -> None:
    env = logged_env
    runtime = shared_runtime(env)
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        drive_slice(env, runtime, client)
    # An accident: an address in a log call is scrubbed before it is written.
    with logging_an_address():
        get_logger("mailveil.test").warning("oops", detail=f"failed for {kit.address(7)}")

    records = json_lines(env.settings.logs_dir / "mailveil.log")
    events = {r.get("event") for r in records}
    assert {"http_request", "relay_transaction", "send_step", "send_batch", "detection_run"} <= (
        events
    )
    requests = [r for r in records if r.get("event") == "http_request"]
    created_line = next(
        r for r in requests if r["request_id"] == "req-ops-1" and r["status"] == 201
    )
    assert created_line["route"] == "/v1/customers" and created_line["method"] == "POST"
    assert created_line["key_id"] and created_line["latency_ms"] >= 0
    # Customer ids are integers: a path holding an address matches no route, and is logged
    # as unmatched (never with the path).
    lookup = [r for r in requests if r["route"] == "unmatched" and r["status"] >= 400]
    assert lookup, "the lookup by address is logged without its path"
    relay = [r for r in records if r.get("event") == "relay_transaction"]
    delivered = [r for r in relay if r["decision"] == "delivered"]
    assert len(delivered) == 3 and all(r["token"] and r["reply_code"] == 250 for r in delivered)
    assert any(r["decision"] == "refused_at_rcpt" and r["reply_code"] == 550 for r in relay)
    assert all("latency_ms" in r and "direction" in r for r in relay)
    oops = next(r for r in records if r.get("event") == "oops")
    assert oops["detail"] == "failed for [address]"

    world = [kit.address(n) for n in range(1, 11)] + [STRANGER, NEW_CUSTOMER]
    text = (env.settings.logs_dir / "mailveil.log").read_text(encoding="utf-8").lower()
    assert [a for a in world if a.lower() in text] == []
    # The relay's aliases may be logged (they are not anyone's address).
    assert env.sink.recipients(), "the world's addresses did travel through the relay"


def test_the_scrubber_reaches_nested_values_and_keeps_aliases(tmp_path: object) -> None:
    settings = load_settings(env={}, data_dir=tmp_path, relay_domain="relay.test")  # type: ignore[arg-type]
    configure_logging(settings)
    try:
        with logging_an_address():
            get_logger("t").info(
                "nested",
                who={"to": ["eve@example.com", "k7m2q9xhw3cd4f@relay.test"]},
                raw=b"from <mallory@example.net>",
            )
        record = json_lines(settings.logs_dir / "mailveil.log")[-1]
        assert record["who"] == {"to": ["[address]", "k7m2q9xhw3cd4f@relay.test"]}
        assert record["raw"] == "from <[address]>"
        assert record["level"] == "info" and record["logger"] == "t" and "timestamp" in record
    finally:
        reset_logging()
    assert scrub("a@relay.test.evil.example", "relay.test") == "[address]"


def test_standard_library_records_are_json_too(tmp_path: object) -> None:
    import logging

    settings = load_settings(env={}, data_dir=tmp_path, relay_domain="relay.test")  # type: ignore[arg-type]
    configure_logging(settings)
    try:
        with logging_an_address():
            logging.getLogger("mailveil.relay").error("relay: lookup failed for %s", "x@y.example")
        record = json_lines(settings.logs_dir / "mailveil.log")[-1]
        assert record["event"] == "relay: lookup failed for [address]"
        assert record["level"] == "error" and record["logger"] == "mailveil.relay"
    finally:
        reset_logging()
