"""The long-lived objects one process needs, built once from settings and passed in.

Nothing here runs at import time: ``Runtime.open(settings)`` builds the engine, loads the keys
and compiles the policies when a command or the server starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailveil.config import Settings
from mailveil.db.session import make_engine, make_session_factory
from mailveil.ledger.append import Ledger
from mailveil.ledger.counting import count_ledger_commits
from mailveil.ops.metrics import Metrics
from mailveil.policy import PolicyEngine
from mailveil.vault import Vault


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    vault: Vault
    policy: PolicyEngine
    ledger: Ledger
    # This process's Prometheus registry (API, relay, notify and detect counters).
    metrics: Metrics = field(default_factory=Metrics)

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        engine: Engine | None = None,
        session_factory: sessionmaker[Session] | None = None,
    ) -> Runtime:
        """Build from settings. Tests pass an engine or a session factory bound to their
        own connection so each test's work can be rolled back."""
        engine = engine or make_engine(settings)
        factory = session_factory or make_session_factory(engine)
        metrics = Metrics(factory)
        count_ledger_commits(factory, metrics.ledger_appends)
        return cls(
            settings=settings,
            engine=engine,
            session_factory=factory,
            vault=Vault.open(settings),
            policy=PolicyEngine.load(settings),
            ledger=Ledger.load(settings),
            metrics=metrics,
        )
