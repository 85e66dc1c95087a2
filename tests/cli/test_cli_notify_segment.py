"""`mailveil sends preview|create|start` with a segment (a fact query) for audience, on a
real database with mailveil's relay and a mail sink (notify_kit): the preview says its
audience source is the segment, and `sends start` counts the stages while they run and says
"all N done" after the last one, never "N+1 of N"."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_testkit import Cli, open_db, table_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notify"))
import notify_kit as kit

CUSTOMERS = 30
GIFTED = list(range(1, 26))  # 25 of 30: stages of 20, 20, 20 and 25 (the minimum stage is 20)


@pytest.fixture
def env(cli: Cli, admin_token: str) -> Iterator[kit.NotifyEnv]:
    """An initialised CLI data directory, the relay and a sink on it, 30 customers, and the
    CLI pointed at that relay (policy override, no soak)."""
    settings = kit.notify_settings(cli.settings())
    with open_db(settings) as factory:
        for opened in kit.open_env(settings, factory, CUSTOMERS):
            cli.env.update(
                MAILVEIL_POLICY_DIR=settings.policy_dir,
                MAILVEIL_NOTIFY_RELAY_HOST="127.0.0.1",
                MAILVEIL_NOTIFY_RELAY_PORT=str(opened.settings.notify_relay_port),
                MAILVEIL_NOTIFY_SOAK_SECONDS="0",
                MAILVEIL_NOTIFY_MIN_STAGE_SIZE="20",
                MAILVEIL_NOTIFY_RECONCILE_AFTER_SECONDS="1",
            )
            yield opened


def test_a_segment_preview_says_segment_and_start_ends_all_done(
    cli: Cli, env: kit.NotifyEnv, tmp_path: Path
) -> None:
    facts = tmp_path / "facts.ndjson"
    facts.write_text("".join(json.dumps(f) + "\n" for f in kit.gift_facts(GIFTED)))
    cli.ok("facts", "import", str(facts))
    (tmp_path / "gift.json").write_text(json.dumps(kit.GIFT_TEMPLATE), encoding="utf-8")
    cli.ok("templates", "add", str(tmp_path / "gift.json"))
    segment = tmp_path / "segment.json"
    segment.write_text(json.dumps({"query": {"kind": "registry.gift_purchased"}}))
    name = kit.GIFT_TEMPLATE["name"]

    shown = cli.ok("sends", "preview", "--template", name, "--audience", str(segment))
    rows = {r[0]: r[1] for r in table_rows(shown.stdout) if len(r) == 2}
    assert rows["audience source"] == "segment", str(shown)
    assert rows["audience"] == rows["eligible"] == str(len(GIFTED))
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps({"customers": [{"customer": "c1"}]}))
    by_list = cli.ok("sends", "preview", "--template", name, "--audience", str(listed))
    assert {r[0]: r[1] for r in table_rows(by_list.stdout)}["audience source"] == "list"

    created = cli.ok("sends", "create", "--template", name, "--audience", str(segment))
    send_id = int(created.stdout.split("send ", 2)[-1].split()[0])
    before = {r[0]: r[1] for r in table_rows(created.stdout)}
    assert before["stage"] == "1 of 4" and before["eligible"] == str(len(GIFTED))
    done = cli.ok("sends", "start", str(send_id))
    assert "completed" in done.stdout, str(done)
    lines = [x for x in done.stdout.splitlines() if x.startswith(f"send {send_id}: ")]
    assert lines and lines[-1].startswith(f"send {send_id}: completed, stage all 4 done"), lines
    final = {r[0]: r[1] for r in table_rows(done.stdout) if len(r) == 2}
    assert final["stage"] == "all 4 done" and final["status"] == "completed"
    shown_stages = [tuple(map(int, m)) for m in re.findall(r"stage (\d+) of (\d+)", done.stdout)]
    assert all(1 <= k <= n == 4 for k, n in shown_stages), shown_stages  # never "5 of 4"
    status = {r[0]: r[1] for r in table_rows(cli.ok("sends", "status", str(send_id)).stdout)}
    assert status["stage"] == "all 4 done"
    env.flush()
    assert env.delivered_numbers() == GIFTED
