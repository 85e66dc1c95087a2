"""Checking one entry as an outsider would: leaf hash, inclusion proof to the signed root,
and the checkpoint's signature; a changed entry is caught at the step it breaks."""

from __future__ import annotations

import pytest
from ledger_testkit import fill, signer_for
from sqlalchemy import text
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.errors import InvalidInput, NotFound
from mailveil.ledger.append import Ledger
from mailveil.ledger.entry_check import check_entry


def test_every_entry_checks_out_step_by_step(session: Session, settings: Settings) -> None:
    signer = signer_for(settings)
    ledger = Ledger(settings, signer)
    fill(session, settings, signer, 37)
    for seq in (0, 1, 17, 36):
        checked = check_entry(session, ledger, seq)
        assert checked.ok, checked.steps
        assert [what for what, _ok, _detail in checked.steps] == [
            "checkpoint signature",
            "leaf hash",
            "inclusion proof",
        ]
        assert checked.tree_size == 37 and checked.entry["seq"] == seq
    with pytest.raises(NotFound):
        check_entry(session, ledger, 37)
    with pytest.raises(InvalidInput):
        check_entry(session, ledger, -1)


def test_a_changed_leaf_fails_its_check(session: Session, settings: Settings) -> None:
    signer = signer_for(settings)
    ledger = Ledger(settings, signer)
    fill(session, settings, signer, 9)
    check_entry(session, ledger, 4)  # signs the checkpoint covering it
    # An attacker with the database rewrites the stored hash of entry 4 to match nothing.
    session.execute(
        text("UPDATE ledger_entries SET leaf_hash = :h WHERE seq = 4"), {"h": b"\x00" * 32}
    )
    checked = check_entry(session, ledger, 4)
    assert not checked.ok
    failed = {what for what, ok, _detail in checked.steps if not ok}
    assert "leaf hash" in failed
