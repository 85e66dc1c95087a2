import json
import logging
from pathlib import Path

import structlog

from logscan import logging_an_address
from mailveil.config import load_settings
from mailveil.logs import configure_logging, scrub


def test_scrub_keeps_relay_addresses_and_hides_others() -> None:
    text = (
        "to alice.smith+x@example.com via k7m2q9xhw3cd4f@relay.test from Bob <bob@sub.example.org>"
    )
    out = scrub(text, "relay.test")
    assert "alice.smith" not in out and "bob@" not in out
    assert "k7m2q9xhw3cd4f@relay.test" in out
    assert out.count("[address]") == 2


def test_log_lines_never_carry_a_real_address(tmp_path: Path) -> None:
    settings = load_settings(env={}, data_dir=tmp_path / "var", relay_domain="relay.test")
    configure_logging(settings)
    try:
        with logging_an_address():
            structlog.get_logger("t").warning("oops", detail="failed for carol@example.net")
        for handler in logging.getLogger().handlers:
            handler.flush()
        line = (settings.logs_dir / "mailveil.log").read_text().strip().splitlines()[-1]
        record = json.loads(line)
        assert record["event"] == "oops"
        assert "carol@example.net" not in line
        assert record["detail"] == "failed for [address]"
    finally:
        for handler in logging.getLogger().handlers[:]:
            handler.close()
            logging.getLogger().removeHandler(handler)
        structlog.reset_defaults()
