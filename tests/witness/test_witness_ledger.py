"""The ledger publishing to a witness that runs in another process (`mailveil witness serve`
on a loopback port): growth is cosigned; a rewritten, rolled-back or forked ledger is refused
and the refusal raises an alert, on SQLite and PostgreSQL. And the witness's state survives
SIGKILL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session, sessionmaker
from witness_testkit import MemoryLog, WitnessProcess, events, start_witness

from mailveil.config import Settings, load_settings
from mailveil.db.migrate import upgrade
from mailveil.db.session import make_engine, make_session_factory, session_scope
from mailveil.ledger.append import Ledger as AppendLedger
from mailveil.ledger.append import append, checkpoint_now, latest_checkpoint
from mailveil.ledger.models import LedgerCheckpoint, LedgerEntry, LedgerHead, LedgerNode
from mailveil.ledger.signing import CheckpointSigner, init_signing_key
from mailveil.witness.alerts import ALERT_KIND, list_alerts
from mailveil.witness.client import add_checkpoint
from mailveil.witness.home import WitnessHome
from mailveil.witness.models import LedgerCosignature, LedgerWitnessStatus
from mailveil.witness.policy import check_checkpoint
from mailveil.witness.publish import PublishReport, publish_latest
from mailveil.witness.queries import checkpoint_view, witnessed_checkpoint
from mailveil.witness.state import origin_hash


@pytest.fixture(scope="module")
def witness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WitnessProcess]:
    directory = tmp_path_factory.mktemp("witness")
    WitnessHome(directory).init("witness.test/w1")
    running = start_witness(directory)
    yield running
    running.stop()


class Ledger:
    """A ledger on its own database, configured to publish to the witness."""

    def __init__(self, engine: Engine, data_dir: Path, origin: str, witness: WitnessProcess):
        home = WitnessHome(witness.directory)
        self.witness_vkey = home.load().vkey.vkey
        self.settings: Settings = load_settings(
            env={},
            data_dir=data_dir,
            ledger_origin=origin,
            checkpoint_every_entries=1000,
            witnesses=f"{self.witness_vkey} {witness.url}",
        )
        init_signing_key(self.settings)
        self.signer = CheckpointSigner.load(self.settings)
        self.factory: sessionmaker[Session] = make_session_factory(engine)
        home.state().add_log(origin, self.signer.verifier_key)

    def grow(self, n: int, start: int = 0) -> None:
        with session_scope(self.factory) as session:
            append(session, events(n, start), self.settings, self.signer)

    def publish(self) -> PublishReport:
        return publish_latest(self.factory, self.settings, AppendLedger(self.settings, self.signer))

    def rewrite(self, n: int, *, forget_witnesses: bool) -> None:
        """What someone holding the database and the signing key does: throw the history
        away and sign a new one (with the same origin and key)."""
        with session_scope(self.factory) as session:
            if forget_witnesses:
                session.execute(delete(LedgerWitnessStatus))
            session.execute(delete(LedgerCosignature))
            for model in (LedgerCheckpoint, LedgerNode, LedgerEntry, LedgerHead):
                session.execute(delete(model))
        self.grow(n, start=1000)

    def alerts(self) -> list[dict[str, object]]:
        with session_scope(self.factory) as session:
            return list_alerts(session)


def new_origin() -> str:
    return f"ledger.test/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ledger(own_engine: Engine, tmp_path: Path, witness: WitnessProcess) -> Ledger:
    return Ledger(own_engine, tmp_path / "var", new_origin(), witness)


def test_growth_is_cosigned_and_the_cosignature_verifies(ledger: Ledger) -> None:
    ledger.grow(20)
    first = ledger.publish()
    assert [o.result for o in first.outcomes] == ["cosigned"]
    ledger.grow(30, start=20)
    second = ledger.publish()  # the witness checks a consistency proof 20 -> 50
    assert [(o.result, o.tree_size) for o in second.outcomes] == [("cosigned", 50)]
    assert [o.result for o in ledger.publish().outcomes] == ["already"]  # nothing new: no call
    with session_scope(ledger.factory) as session:
        cp = latest_checkpoint(session)
        assert cp is not None
        view = checkpoint_view(session, ledger.settings, cp)
        assert witnessed_checkpoint(session, ledger.settings) == cp
    assert view["witnessed"] and [c["witness"] for c in view["cosignatures"]] == ["witness.test/w1"]
    check = check_checkpoint(
        view["cosigned_note"], ledger.signer.verifier_key, [ledger.witness_vkey]
    )
    assert check.ok, check.problems
    assert ledger.alerts() == []


@pytest.mark.parametrize("forget", [False, True], ids=["status-kept", "status-wiped"])
def test_a_rewritten_ledger_is_refused_and_raises_one_alert(
    ledger: Ledger, forget: bool, witness: WitnessProcess
) -> None:
    ledger.grow(50)
    assert ledger.publish().cosigned == 1
    ledger.rewrite(60, forget_witnesses=forget)  # longer than what the witness saw
    report = ledger.publish()
    [outcome] = report.outcomes
    assert outcome.result == "refused" and outcome.witness_size == 50
    assert outcome.alert is not None and outcome.alert.reason == "inconsistent"
    assert "not consistent with size 50" in outcome.detail
    [alert] = ledger.alerts()
    assert alert["reason"] == "inconsistent" and alert["witness"] == "witness.test/w1"
    assert alert["ledger_size"] == 60 and alert["witness_size"] == 50
    # The alert is an entry of the ledger itself.
    with session_scope(ledger.factory) as session:
        kinds = [e.kind for e in session.query(LedgerEntry).order_by(LedgerEntry.seq)]
    assert kinds.count(ALERT_KIND) == 1
    # The witness kept its copy and the forged checkpoint, and refuses again without a
    # second alert (the same disagreement).
    state = WitnessHome(witness.directory).state()
    kept = state.latest_by_hash(origin_hash(ledger.settings.origin))
    assert kept is not None and kept.size == 50
    refusal = state.refusals(ledger.settings.origin)[0]
    assert refusal.size == 60 and refusal.witnessed_size == 50
    again = ledger.publish()
    assert again.outcomes[0].result == "refused" and again.alerts == []
    assert len(ledger.alerts()) == 1
    with session_scope(ledger.factory) as session:
        assert witnessed_checkpoint(session, ledger.settings) is None


def test_a_rolled_back_ledger_is_refused_as_behind_the_witness(ledger: Ledger) -> None:
    ledger.grow(40)
    assert ledger.publish().cosigned == 1
    ledger.rewrite(10, forget_witnesses=True)  # e.g. restored from an old backup
    [outcome] = ledger.publish().outcomes
    assert outcome.result == "refused" and outcome.witness_size == 40
    assert outcome.alert is not None and outcome.alert.reason == "witness_ahead"
    assert [a["reason"] for a in ledger.alerts()] == ["witness_ahead"]


def test_a_fork_is_refused_while_the_real_ledger_goes_on(
    ledger: Ledger, tmp_path: Path, witness: WitnessProcess
) -> None:
    ledger.grow(30)
    assert ledger.publish().cosigned == 1
    # A second database, same origin, same signing key: a split view of the ledger.
    engine = make_engine(url=f"sqlite:///{tmp_path / 'fork.db'}")
    upgrade(engine)
    try:
        fork = Ledger(engine, tmp_path / "var", ledger.settings.origin, witness)
        fork.grow(25)
        fork.grow(25, start=500)
        [outcome] = fork.publish().outcomes
        assert outcome.result == "refused" and outcome.alert is not None
        assert outcome.alert.reason == "inconsistent"
        assert [a["reason"] for a in fork.alerts()] == ["inconsistent"]
    finally:
        engine.dispose()
    ledger.grow(10, start=30)
    assert [o.result for o in ledger.publish().outcomes] == ["cosigned"]
    assert ledger.alerts() == []


def test_the_witness_state_survives_sigkill(tmp_path: Path) -> None:
    """A cosignature is only returned once the witness's state is on disk: killed right
    after answering, it restarts remembering the size it cosigned."""
    directory = tmp_path / "crash-witness"
    WitnessHome(directory).init("witness.test/crash")
    log = MemoryLog()
    WitnessHome(directory).state().add_log(log.origin, log.vkey)
    log.grow(12)
    first = start_witness(directory)
    try:
        assert add_checkpoint(first.url, 0, [], log.note(), timeout=10).status == 200
    finally:
        first.stop(kill=True)  # SIGKILL right after it answered
    second = start_witness(directory)
    try:
        stale = add_checkpoint(second.url, 0, [], log.note(), timeout=10)
        assert (stale.status, stale.body) == (409, "12\n")
        forged = log.fork(keep=6, grow=14)
        refused = add_checkpoint(second.url, 12, forged.proof(12), forged.note(), timeout=10)
        assert refused.status == 422
        log.grow(8)
        grown = add_checkpoint(second.url, 12, log.proof(12), log.note(), timeout=10)
        assert grown.status == 200
    finally:
        second.stop()


def test_the_console_ledger_page_shows_the_stored_cosignatures(ledger: Ledger) -> None:
    """The console reads the cosignatures the ledger stored (each verified when received),
    not the signature lines of a note."""
    from mailveil.auth.keys import Role
    from mailveil.console.web import templates
    from mailveil.witness.queries import witness_statuses

    ledger.grow(5)
    assert ledger.publish().cosigned == 1
    ledger.grow(3, start=5)  # the current checkpoint is newer than the witnessed one
    with session_scope(ledger.factory) as session:
        witnessed = witnessed_checkpoint(session, ledger.settings)
        assert witnessed is not None and witnessed.tree_size == 5
        current = checkpoint_now(session, ledger.settings, ledger.signer)
        assert current is not None and current.tree_size == 8
        html = (
            templates()
            .get_template("ledger.html")
            .render(
                request=None,
                me=None,
                Role=Role,
                flash=None,
                oidc_label=None,
                checkpoint=current,
                current=checkpoint_view(session, ledger.settings, current),
                witnessed=checkpoint_view(session, ledger.settings, witnessed),
                witnesses=witness_statuses(session, ledger.settings),
                verifier_key=ledger.signer.verifier_key,
                entry=None,
                checked=None,
                problem=None,
            )
        )
    assert "No witness has cosigned this checkpoint yet" in html
    assert "Newest witnessed checkpoint" in html and "5 entries, cosigned by 1" in html
    assert "witness.test/w1" in html and "verified against the witness" in html
    assert "Cosigned up to" in html and "never" not in html
