"""Rotating keys while the relay takes mail (issue 14, key custody: rotation of every key).

Each test runs a client thread through the whole rotation and requires that nothing was
refused: the relay looks customers up by blind index (a customer writing back), signs bounce
addresses with the VERP key and checks them when bounces come back.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import relay_server_kit as kit
from custody_kit import LiveDb, Traffic, live_db, running_relay
from sqlalchemy import select

from mailveil.config import Settings
from mailveil.contacts.customers import create_customer, find_customer_by_address
from mailveil.contacts.models import Customer
from mailveil.custody.binding import (
    bind_keys,
    check_against_data,
    check_recorded,
    present_keys,
)
from mailveil.custody.ledger_rotation import EVENT_KIND, ledger_keys, rotate_ledger_key
from mailveil.custody.rotation import (
    begin_index_rotation,
    begin_write,
    finish_index_rotation,
    reindex_addresses,
    rotate_verp_key,
)
from mailveil.db.session import make_session_factory
from mailveil.keyfiles import read_secret
from mailveil.ledger.append import checkpoint_now
from mailveil.ledger.models import LedgerCheckpoint, LedgerEntry
from mailveil.ledger.signing import CheckpointSigner, verify_checkpoint
from mailveil.ledger.verify import verify_ledger
from mailveil.relay.dkim_rollover import load_signer, retire_rollover, start_rollover
from mailveil.relay.messages import VERP_RETIRED_PREFIX, verify_bounce_local
from mailveil.vault import INDEX_KEY_FILE, INDEX_NEXT_FILE, Vault, normalize_address, rotate_keys

REFRESH = 0.2  # key_refresh_seconds in these tests: processes pick a rotation up quickly
SEEDED = 300  # customers besides the relay's world in the blind-index rotation


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path, _pg_available: bool) -> Iterator[LiveDb]:
    with live_db(request.param, tmp_path, _pg_available) as live:
        yield live


def test_blind_index_key_rotates_with_lookups_working_throughout(
    db: LiveDb, relay_settings: Settings, tmp_path: Path
) -> None:
    with running_relay(relay_settings, db, tmp_path, key_refresh_seconds=REFRESH) as relay:
        settings = relay.settings
        old_key = read_secret(settings.keys_dir / INDEX_KEY_FILE)
        factory = make_session_factory(db.engine)
        vault = Vault.open(settings)  # the operator's process, apart from the relay's
        with factory() as session:  # enough rows that the re-index takes several batches
            for n in range(SEEDED):
                create_customer(
                    session,
                    vault,
                    external_id=f"bulk-{n}",
                    email=f"bulk{n}@example.org",
                    country="DE",
                )
            session.commit()
        traffic = Traffic(relay, both_directions=True).start()
        try:
            traffic.wait_for(6)
            with factory() as session:
                assert begin_index_rotation(session, settings)
            time.sleep(3 * REFRESH)  # what rotate_index_key waits: the relay is dual now
            traffic.wait_for(traffic.accepted + 4)
            with factory() as session:
                # A customer added mid-rotation is indexed under the next key at once ...
                begin_write(session)
                create_customer(
                    session,
                    vault,
                    external_id="mid",
                    email="Mid.Rotation@example.net",
                    country="DE",
                )
                session.commit()
                reindexed = reindex_addresses(session, vault, batch_size=25)
                # ... and every address is found while both keys are live.
                for address in relay.world.customer_addresses:
                    assert find_customer_by_address(session, vault, address) is not None
            traffic.wait_for(traffic.accepted + 4)
            with factory() as session:
                retired = finish_index_rotation(session, settings)
            vault.refresh_index_keys(force=True)
            traffic.wait_for(traffic.accepted + 6)
        finally:
            traffic.stop()
        assert traffic.refused == [] and traffic.errors == [], (traffic.refused, traffic.errors)
        assert traffic.accepted >= 20
        new_key = read_secret(settings.keys_dir / INDEX_KEY_FILE)
        assert new_key != old_key
        assert read_secret(settings.keys_dir / retired) == old_key
        assert not (settings.keys_dir / INDEX_NEXT_FILE).exists()
        with factory() as session:
            rows = session.execute(select(Customer.external_id, Customer.address_bidx)).all()
            assert reindexed == len(rows) - 1  # all but the one written under the next key
            by_ext = {ext: bytes(b) for ext, b in rows}
            for name, address in relay.world.real.items():
                canonical = normalize_address(address).canonical.encode()
                want = hmac.new(new_key, canonical, hashlib.sha256).digest()
                assert by_ext[f"cust-{name}"] == want, name
                assert find_customer_by_address(session, Vault.open(settings), address)
            # The record follows the rotation: a restart accepts the new key set.
            assert check_recorded(session, settings, present_keys(settings.keys_dir))[0] == []
            session.commit()  # end the read: bind_keys writes first in its own transaction
            bind_keys(session, settings)
        print(
            f"\n[rotation blind-index {db.backend}] messages accepted: {traffic.accepted}, "
            f"refused: {len(traffic.refused)}, errors: {len(traffic.errors)}; "
            f"rows re-indexed: {reindexed}"
        )


def _rcpt(relay: kit.Relay, address: str) -> int:
    with relay.client() as client:
        client.mail("<>")
        code, _ = client.rcpt(address)
        client.rset()
    return code


def test_verp_key_rotates_and_old_bounce_addresses_are_honoured_for_the_grace(
    db: LiveDb, relay_settings: Settings, tmp_path: Path
) -> None:
    with running_relay(relay_settings, db, tmp_path, key_refresh_seconds=REFRESH) as relay:
        settings = relay.settings
        old_key = read_secret(settings.keys_dir / "relay-verp.key")
        factory = make_session_factory(db.engine)
        traffic = Traffic(relay).start()
        try:
            traffic.wait_for(5)
            with factory() as session:
                retired = rotate_verp_key(session, settings)
            # The relay re-reads its keys every REFRESH seconds: mail sent before that is
            # rightly signed with the old key, however fast the relay is.
            time.sleep(3 * REFRESH)
            traffic.wait_for(traffic.accepted + 10)
        finally:
            traffic.stop()
        assert traffic.refused == [] and traffic.errors == [], (traffic.refused, traffic.errors)
        new_key = read_secret(settings.keys_dir / "relay-verp.key")
        senders = [m.mail_from for m in relay.delivered()]
        old = [s for s in senders if verify_bounce_local(old_key, s.split("@")[0])]
        new = [s for s in senders if verify_bounce_local(new_key, s.split("@")[0])]
        assert old and new and len(old) + len(new) == len(senders)
        # A bounce to a message signed before the rotation is still taken ...
        assert _rcpt(relay, old[0]) == 250
        assert _rcpt(relay, new[-1]) == 250
        # ... until the grace period is over.
        archived = settings.keys_dir / retired
        long_ago = f"{VERP_RETIRED_PREFIX}{1_000_000}-dead.key"
        archived.rename(settings.keys_dir / long_ago)
        relay.server.ctx.verp.refresh(force=True)
        assert _rcpt(relay, old[0]) != 250
        assert _rcpt(relay, new[-1]) == 250
        with factory() as session:
            assert check_recorded(session, settings, present_keys(settings.keys_dir))[0] == []
        print(
            f"\n[rotation VERP {db.backend}] messages accepted: {traffic.accepted}, "
            f"refused: {len(traffic.refused)}, errors: {len(traffic.errors)}; "
            f"signed with the old key: {len(old)}, with the new: {len(new)}"
        )


def _selectors(data: bytes) -> set[str]:
    head = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    found = set()
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"dkim-signature:"):
            for tag in line.split(b":", 1)[1].split(b";"):
                name, _, value = tag.strip().partition(b"=")
                if name == b"s":
                    found.add(value.strip().decode())
    return found


def test_dkim_selectors_roll_over_with_overlap(
    db: LiveDb, relay_settings: Settings, tmp_path: Path
) -> None:
    overlap_hours = 1.5 / 3600  # 1.5 s between publishing the new records and signing with them
    with running_relay(
        relay_settings,
        db,
        tmp_path,
        key_refresh_seconds=REFRESH,
        dkim_overlap_hours=overlap_hours,
    ) as relay:
        settings = relay.settings
        old = {settings.dkim_selector_ed25519, settings.dkim_selector_rsa}
        traffic = Traffic(relay).start()
        try:
            traffic.wait_for(5)
            gen = start_rollover(settings, "mv-ed-2027", "mv-rsa-2027")
            during = load_signer(settings)  # what DNS holds during the overlap: both pairs
            assert set(during.dns_records()) == {
                f"{s}._domainkey.{settings.relay_domain}"
                for s in (*old, "mv-ed-2027", "mv-rsa-2027")
            }
            while time.time() < gen.signs_from + 3 * REFRESH:
                traffic.wait_for(traffic.accepted + 1)
            traffic.wait_for(traffic.accepted + 5)
        finally:
            traffic.stop()
        assert traffic.refused == [] and traffic.errors == [], (traffic.refused, traffic.errors)
        delivered = relay.delivered()
        used = [_selectors(m.data) for m in delivered]
        assert old in used and {"mv-ed-2027", "mv-rsa-2027"} in used
        assert all(u in (old, {"mv-ed-2027", "mv-rsa-2027"}) for u in used)
        # Never back: once the new pair signs, the old one does not any more.
        first_new = used.index({"mv-ed-2027", "mv-rsa-2027"})
        assert all(u != old for u in used[first_new:])
        for m in delivered:  # every message verifies against what is published
            assert kit.verify_dkim(m.data, during) == [True, True]
        retired = retire_rollover(settings, now=gen.signs_from + overlap_hours * 3600 + 1)
        assert set(retired) == old
        after = load_signer(settings)
        assert {k.selector for k in after.keys} == {"mv-ed-2027", "mv-rsa-2027"}
        assert after.published == ()
        for m in delivered[first_new:]:
            assert kit.verify_dkim(m.data, after) == [True, True]
        print(
            f"\n[rotation DKIM {db.backend}] messages accepted: {traffic.accepted}, "
            f"refused: {len(traffic.refused)}, errors: {len(traffic.errors)}; signed with the "
            f"old selectors: {first_new}, with the new: {len(delivered) - first_new}"
        )


def test_ledger_key_rotates_as_a_ledger_entry_and_old_checkpoints_keep_verifying(
    db: LiveDb, relay_settings: Settings, tmp_path: Path
) -> None:
    with running_relay(relay_settings, db, tmp_path) as relay:
        settings = relay.settings
        factory = make_session_factory(db.engine)
        old = CheckpointSigner.load(settings)
        traffic = Traffic(relay).start()
        try:
            traffic.wait_for(20)  # checkpoint_every_entries is 16: the old key signed some
            with factory() as session:
                done = rotate_ledger_key(session, settings, old, actor="operator:test")
            traffic.wait_for(traffic.accepted + 20)  # the running relay still holds the old key
        finally:
            traffic.stop()
        relay.server.flush()
    assert traffic.refused == [] and traffic.errors == [], (traffic.refused, traffic.errors)
    new = CheckpointSigner.load(settings)  # a restarted process
    assert new.verifier_key == done.new_key != old.verifier_key
    with factory() as session:
        [entry] = [
            e for e in session.scalars(select(LedgerEntry).where(LedgerEntry.kind == EVENT_KIND))
        ]
        assert entry.seq == done.seq
        assert done.new_key in entry.leaf and old.verifier_key in entry.leaf
        checkpoint_now(session, settings, new)
        session.commit()
        cps = list(session.scalars(select(LedgerCheckpoint).order_by(LedgerCheckpoint.tree_size)))
    assert done.checkpoint is not None
    # The checkpoint covering the rotation carries both signatures.
    verify_checkpoint(done.checkpoint.note, old.public_key)
    verify_checkpoint(done.checkpoint.note, new.public_key)
    before = [c for c in cps if c.tree_size <= done.seq]
    assert before and all(verify_checkpoint(c.note, old.public_key) for c in before)
    keys = ledger_keys(settings, new.public_key)
    report = verify_ledger(db.engine, settings, keys, split=False)
    assert report.ok, report.reason
    assert report.checkpoints == len(cps)
    # Only the current key would not do: the history is what keeps old checkpoints valid.
    assert not verify_ledger(db.engine, settings, new.public_key, split=False).ok
    with factory() as session:
        assert check_recorded(session, settings, present_keys(settings.keys_dir))[0] == []
        assert check_against_data(session, settings) == []
    print(
        f"\n[rotation ledger {db.backend}] messages accepted: {traffic.accepted}, "
        f"refused: {len(traffic.refused)}, errors: {len(traffic.errors)}; ledger verify: ok "
        f"({report.entries} entries, {report.checkpoints} checkpoints, "
        f"{len(before)} signed by the old key before the rotation)"
    )


def test_address_kek_rotates_and_reencrypts_under_traffic(
    db: LiveDb, relay_settings: Settings, tmp_path: Path
) -> None:
    with running_relay(relay_settings, db, tmp_path) as relay:
        settings = relay.settings
        factory = make_session_factory(db.engine)
        vault = Vault.open(settings)
        traffic = Traffic(relay, both_directions=True).start()
        try:
            traffic.wait_for(6)
            with factory() as session:
                begin_write(session)
                report = rotate_keys(session, vault, reencrypt=True, batch_size=2)
            traffic.wait_for(traffic.accepted + 10)
        finally:
            traffic.stop()
        assert traffic.refused == [] and traffic.errors == [], (traffic.refused, traffic.errors)
        with factory() as session:
            bind_keys(session, settings)  # the new KEK is recorded
            session.commit()
            assert set(session.scalars(select(Customer.address_dek))) == {report.new_dek_id}
            assert check_recorded(session, settings, present_keys(settings.keys_dir))[0] == []
        print(
            f"\n[rotation address KEK {db.backend}] messages accepted: {traffic.accepted}, "
            f"refused: {len(traffic.refused)}, errors: {len(traffic.errors)}; "
            f"re-encrypted: {report.reencrypted_rows}"
        )
