"""`mailveil facts|templates|sends` in-process on a real database, with mailveil's relay and
a mail sink (notify_kit) for the sends the CLI runs to their end."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cli_testkit import Cli, open_db, table_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notify"))
import notify_kit as kit

from mailveil.notify.sends import get_send

CUSTOMERS = 30
GIFTS = [3, 7]  # customers with a registry gift: the rest must never get mail


def toml_template(data: dict[str, Any]) -> str:
    """The kit's template as a TOML file (what an operator would keep in a repository)."""
    lines = []
    for key, value in data.items():
        if key != "rule":
            lines.append(f"{key} = {json.dumps(value)}")
    lines.append("[rule]")
    lines.append("require = [" + ", ".join(_inline(r) for r in data["rule"]["require"]) + "]")
    if "owns" in data["rule"]:
        lines.append("owns = [" + ", ".join(_inline(r) for r in data["rule"]["owns"]) + "]")
    return "\n".join(lines) + "\n"


def _inline(table: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + "}"


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


def write_facts(path: Path, facts: list[dict[str, Any]], extra: Sequence[str] = ()) -> Path:
    path.write_text("\n".join([*(json.dumps(f) for f in facts), *extra]) + "\n", encoding="utf-8")
    return path


def test_facts_import_reports_bad_lines(cli: Cli, env: kit.NotifyEnv, tmp_path: Path) -> None:
    good = kit.gift_facts(GIFTS)  # 4 lines
    unknown = {**good[0], "id": "nobody-1", "customer": "c999"}
    bad = write_facts(tmp_path / "facts.ndjson", good, ["not json", json.dumps(unknown)])
    run = cli("facts", "import", str(bad))
    assert run.code == 1, str(run)
    rows = {r[0]: r for r in table_rows(run.stderr)}
    assert set(rows) == {"5", "6"}, str(run)
    assert rows["5"][2] == "invalid_input" or "invalid" in rows["5"][2], rows
    assert "not_found" in rows["6"][2] or "found" in rows["6"][2], rows
    assert "created 4, unchanged 0, errors 2" in run.stdout
    again = cli.ok("facts", "import", str(write_facts(tmp_path / "ok.ndjson", good)))
    assert "created 0, unchanged 4, errors 0" in again.stdout
    assert cli("facts", "import", str(tmp_path / "missing.ndjson")).code == 2


def test_templates_add_list_lint(cli: Cli, env: kit.NotifyEnv, tmp_path: Path) -> None:
    toml = tmp_path / "gift.toml"
    toml.write_text(toml_template(kit.GIFT_TEMPLATE), encoding="utf-8")
    assert "no findings" in cli.ok("templates", "lint", str(toml)).stdout
    added = cli.ok("templates", "add", str(toml))
    assert "registered registry-gift version 1" in added.stdout
    as_json = tmp_path / "sorry.json"
    as_json.write_text(json.dumps(kit.SORRY_TEMPLATE), encoding="utf-8")
    cli.ok("templates", "add", str(as_json))
    cli.ok("templates", "add", str(toml))  # version 2
    listed = {r[0]: r for r in table_rows(cli.ok("templates", "list").stdout)}
    assert listed["registry-gift"][1:3] == ["2", "transactional"]
    assert listed["registry-gift"][3] == kit.SERVICE and listed["registry-gift"][-1] == "yes"

    broken = tmp_path / "broken.json"
    broken.write_text(
        json.dumps({**kit.SORRY_TEMPLATE, "subject": "Integration test: lorem ipsum",
                    "body": "Your account was tarminated, {name}.\n"}),
        encoding="utf-8",
    )  # fmt: skip
    linted = cli("templates", "lint", str(broken))
    assert linted.code == 1, str(linted)
    codes = {r[1] for r in table_rows(linted.stdout) if r[0] == "error"}
    assert {"spelling", "test-marker", "unresolved-placeholder"} <= codes, str(linted)
    assert "tarminated" in linted.flat
    # Registering it stores the version but says it cannot be sent.
    stored = cli("templates", "add", str(broken))
    assert stored.code == 1 and "cannot be sent" in stored.stderr, str(stored)
    bad_ext = tmp_path / "t.yaml"
    bad_ext.write_text("x", encoding="utf-8")
    assert cli("templates", "lint", str(bad_ext)).code == 2


def _setup_send(cli: Cli, env: kit.NotifyEnv, tmp_path: Path) -> Path:
    cli.ok("facts", "import", str(write_facts(tmp_path / "f.ndjson", kit.gift_facts(GIFTS))))
    for data, name in ((kit.GIFT_TEMPLATE, "gift.json"), (kit.SORRY_TEMPLATE, "sorry.json")):
        (tmp_path / name).write_text(json.dumps(data), encoding="utf-8")
        cli.ok("templates", "add", str(tmp_path / name))
    audience = tmp_path / "everyone.json"
    people = [{"customer": f"c{n}"} for n in range(1, CUSTOMERS + 1)]
    audience.write_text(json.dumps({"customers": people}), encoding="utf-8")
    return audience


def test_preview_start_halts_and_correct_reaches_exactly_the_delivered(
    cli: Cli, env: kit.NotifyEnv, tmp_path: Path
) -> None:
    audience = _setup_send(cli, env, tmp_path)
    name = kit.GIFT_TEMPLATE["name"]
    shown = cli.ok("sends", "preview", "--template", name, "--audience", str(audience))
    rows = {r[0]: r[1] for r in table_rows(shown.stdout) if len(r) == 2}
    assert rows["audience"] == str(CUSTOMERS) and rows["eligible"] == str(len(GIFTS))
    assert rows["ineligible"] == str(CUSTOMERS - len(GIFTS))
    assert rows["second approver"] == "not required" and rows["first stage"] == "would halt"
    assert "stage plan" in shown.stdout and "not sent, and why" in shown.stdout
    assert env.sink.recipients() == []  # a preview sends nothing

    created = cli.ok("sends", "create", "--template", name, "--audience", str(audience))
    send_id = int(created.stdout.split("send ", 2)[-1].split()[0])
    started = cli("sends", "start", str(send_id))
    assert started.code == 1 and "halted" in started.stderr, str(started)
    env.flush()
    delivered = env.delivered_numbers()
    assert set(delivered) <= set(GIFTS) and len(delivered) == len(set(delivered))
    status = {r[0]: r[1] for r in table_rows(cli.ok("sends", "status", str(send_id)).stdout)}
    assert status["status"] == "halted"
    assert int(status.get("recipients delivered", "0")) == len(delivered)

    fixed = cli.ok("sends", "correct", str(send_id), "--template", kit.SORRY_TEMPLATE["name"])
    fix_id = int(fixed.stdout.rsplit("correction send ", 1)[1].split()[0])
    before = len(env.sink.recipients())
    done = cli.ok("sends", "start", str(fix_id))
    assert "completed" in done.stdout
    env.flush()
    assert len(env.sink.recipients()) - before == len(delivered)
    assert sorted(set(env.delivered_numbers())) == sorted(set(delivered))
    # Over: nothing more to kill, nothing to start again.
    assert cli("sends", "kill", str(fix_id)).code == 1
    assert cli("sends", "start", str(fix_id)).code == 1


def test_kill_before_start_and_errors(cli: Cli, env: kit.NotifyEnv, tmp_path: Path) -> None:
    audience = tmp_path / "gifted.json"
    _setup_send(cli, env, tmp_path)
    audience.write_text(json.dumps({"customers": [{"customer": f"c{n}"} for n in GIFTS]}))
    name = kit.GIFT_TEMPLATE["name"]
    created = cli.ok("sends", "create", "--template", name, "--audience", str(audience))
    send_id = int(created.stdout.split("send ", 2)[-1].split()[0])
    killed = cli.ok("sends", "kill", str(send_id))
    assert "killed" in killed.stdout
    refused = cli("sends", "start", str(send_id))
    assert refused.code == 1 and "killed" in refused.stderr, str(refused)
    assert env.sink.recipients() == []
    with open_db(env.settings) as factory, factory() as session:
        assert get_send(session, send_id).stopped_by.startswith("operator:")  # type: ignore[union-attr]
    missing = cli("sends", "status", "999")
    assert missing.code == 1 and "no send 999" in missing.stderr
    unknown = cli("sends", "preview", "--template", "nope", "--audience", str(audience))
    assert unknown.code == 1 and "no template" in unknown.stderr
    malformed = tmp_path / "bad.json"
    malformed.write_text(json.dumps({"customers": "everyone"}))
    bad = cli("sends", "preview", "--template", name, "--audience", str(malformed))
    assert bad.code == 1 and "audience.customers" in bad.stderr


# A segment (a fact query) for audience: the preview says its source is the segment, and
# `sends start` counts the stages while they run and says "all N done" after the last one,
# never "N+1 of N".
GIFTED = list(range(1, 26))  # 25 of 30: stages of 20, 20, 20 and 25 (the minimum stage is 20)


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
