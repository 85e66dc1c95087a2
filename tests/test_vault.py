"""The vault: normalisation, envelope encryption, blind index, tamper detection, rotation."""

from __future__ import annotations

import os
import stat

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailveil.config import Settings
from mailveil.contacts.customers import (
    create_customer,
    customer_address,
    find_customer_by_address,
    get_customer,
)
from mailveil.contacts.models import Customer
from mailveil.errors import InvalidAddress
from mailveil.keyfiles import KeyFileError
from mailveil.vault import (
    INDEX_KEY_FILE,
    KEK_PREFIX,
    Vault,
    VaultError,
    VaultKey,
    init_keys,
    key_status,
    normalize_address,
    retire_keys,
    rotate_keys,
)


@pytest.fixture
def vault(settings: Settings) -> Vault:
    init_keys(settings)
    return Vault.open(settings)


def _add(session: Session, vault: Vault, n: int) -> list[Customer]:
    return [
        create_customer(
            session, vault, external_id=f"v-{i}", email=f"Person.{i}@Example.org", country="DE"
        )
        for i in range(n)
    ]


# -- normalisation ----------------------------------------------------------------------------


def test_normalisation_keeps_local_case_and_canonicalises_for_the_index() -> None:
    norm = normalize_address("  Alice.Smith@Example.COM ")
    assert norm.stored == "Alice.Smith@example.com"
    assert norm.canonical == "alice.smith@example.com"
    idn = normalize_address("Jörg@Bücher.de")
    assert idn.stored == "Jörg@bücher.de"
    assert idn.canonical == "jörg@xn--bcher-kva.de"
    assert normalize_address("jörg@XN--BCHER-KVA.DE").canonical == idn.canonical


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "no-at-sign.example.com",
        "two@@example.com",
        "secret.person@",
        "secret person@example.com",
        "secret.person@localhost",
        "secret..person@example.com",
        "secret.person@exa mple.com",
        "secret.person@-example.com",
        '"quoted.secret"@example.com',
        "secret.person@example.test",
        "s" * 300 + "@example.com",
        "secret.person@bad_domain_µ.com",
        12345,
        None,
    ],
)
def test_invalid_addresses_are_refused_without_echoing_them(bad: object) -> None:
    with pytest.raises(InvalidAddress) as info:
        normalize_address(bad)
    message = str(info.value)
    assert message
    if isinstance(bad, str) and bad.strip():
        assert bad.strip() not in message
        for part in bad.replace("@", " ").split():
            if len(part) >= 4:
                assert part not in message, message


# -- key files -------------------------------------------------------------------------------


def test_init_keys_is_idempotent_and_writes_0600_files(settings: Settings) -> None:
    made = init_keys(settings)
    assert INDEX_KEY_FILE in made and any(m.startswith(KEK_PREFIX) for m in made)
    assert init_keys(settings) == []
    files = sorted(settings.keys_dir.iterdir())
    assert len(files) == 2
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.keys_dir.stat().st_mode) & 0o077 == 0


def test_open_refuses_missing_or_group_readable_keys(settings: Settings) -> None:
    with pytest.raises(KeyFileError):
        Vault.open(settings)
    init_keys(settings)
    path = settings.keys_dir / INDEX_KEY_FILE
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        Vault.open(settings)


# -- encryption ------------------------------------------------------------------------------


def test_round_trip_and_blind_index_lookup(session: Session, vault: Vault) -> None:
    customer = create_customer(
        session, vault, external_id="rt-1", email="Round.Trip@Example.ORG", country="fr"
    )
    assert customer.country == "FR"
    assert b"Round" not in customer.address_ct and b"example" not in customer.address_ct
    assert customer_address(session, vault, customer) == "Round.Trip@example.org"
    for variant in ("round.trip@example.org", "ROUND.TRIP@EXAMPLE.ORG"):
        found = find_customer_by_address(session, vault, variant)
        assert found is not None and found.id == customer.id
    assert find_customer_by_address(session, vault, "other@example.org") is None


def test_blind_index_depends_on_its_key(settings: Settings, vault: Vault, tmp_path: object) -> None:
    other = Vault(settings.keys_dir, os.urandom(32), {"k": os.urandom(32)})
    assert vault.blind_index("a@example.com") != other.blind_index("a@example.com")
    assert vault.blind_index("a@example.com") == vault.blind_index("A@EXAMPLE.COM")


def test_tampered_ciphertext_fails_clearly(session: Session, vault: Vault) -> None:
    (customer,) = _add(session, vault, 1)
    blob = bytearray(customer.address_ct)
    blob[-1] ^= 0x01
    customer.address_ct = bytes(blob)
    session.flush()
    with pytest.raises(VaultError, match="does not authenticate") as info:
        customer_address(session, vault, customer)
    assert "Person" not in str(info.value)


def test_ciphertexts_swapped_between_rows_fail(session: Session, vault: Vault) -> None:
    a, b = _add(session, vault, 2)
    a_ct, b_ct = a.address_ct, b.address_ct
    a_dek, b_dek = a.address_dek, b.address_dek
    session.execute(
        update(Customer).where(Customer.id == a.id).values(address_ct=b_ct, address_dek=b_dek)
    )
    session.execute(
        update(Customer).where(Customer.id == b.id).values(address_ct=a_ct, address_dek=a_dek)
    )
    session.expire_all()
    for cid in (a.id, b.id):
        with pytest.raises(VaultError, match="moved from another row"):
            customer_address(session, vault, get_customer(session, cid))


def test_swapping_ciphertext_and_index_together_still_fails(session: Session, vault: Vault) -> None:
    a, b = _add(session, vault, 2)
    values_b = (b.address_ct, b.address_bidx)
    session.execute(update(Customer).where(Customer.id == b.id).values(address_bidx=os.urandom(32)))
    session.execute(
        update(Customer)
        .where(Customer.id == a.id)
        .values(address_ct=values_b[0], address_bidx=values_b[1])
    )
    session.expire_all()
    with pytest.raises(VaultError):
        customer_address(session, vault, get_customer(session, a.id))


def test_wrapped_key_tampering_fails(session: Session, settings: Settings, vault: Vault) -> None:
    (customer,) = _add(session, vault, 1)
    row = session.get(VaultKey, customer.address_dek)
    assert row is not None
    blob = bytearray(row.wrapped)
    blob[5] ^= 0xFF
    row.wrapped = bytes(blob)
    session.flush()
    fresh = Vault.open(settings)  # no cached data key
    with pytest.raises(VaultError, match="does not unwrap"):
        customer_address(session, fresh, customer)


# -- rotation --------------------------------------------------------------------------------


def test_rotation_rewraps_and_keeps_every_address_readable(
    session: Session, settings: Settings, vault: Vault
) -> None:
    customers = _add(session, vault, 5)
    session.commit()
    old_kek = vault.current_kek_id
    old_dek = customers[0].address_dek
    report = rotate_keys(session, vault)
    assert report.rewrapped_deks == 1 and report.new_kek_id != old_kek
    assert report.unreferenced_keks == [old_kek]
    assert report.reencrypted_rows == 0
    # Rows are untouched, still under the old DEK, now wrapped by the new KEK.
    assert session.get(VaultKey, old_dek).kek_id == report.new_kek_id  # type: ignore[union-attr]
    fresh = Vault.open(settings)
    for i, c in enumerate(customers):
        assert customer_address(session, fresh, c) == f"Person.{i}@example.org"
    # New writes go under the new data key.
    (new,) = [
        create_customer(session, vault, external_id="after", email="a@example.net", country="IT")
    ]
    assert new.address_dek == report.new_dek_id


def test_two_rotations_with_reencryption_and_retire(
    session: Session, settings: Settings, vault: Vault
) -> None:
    customers = _add(session, vault, 7)
    session.commit()
    first = rotate_keys(session, vault)
    _add_more = create_customer(
        session, vault, external_id="mid", email="mid@example.net", country="ES"
    )
    session.commit()
    seen: list[tuple[int, int]] = []
    second = rotate_keys(
        session, vault, reencrypt=True, batch_size=3, progress=lambda d, t: seen.append((d, t))
    )
    assert second.reencrypted_rows == 8
    assert seen[0] == (0, 8) and seen[-1] == (8, 8) and len(seen) == 4
    deks = set(session.scalars(select(Customer.address_dek)))
    assert deks == {second.new_dek_id}
    assert first.new_kek_id in second.unreferenced_keks
    fresh = Vault.open(settings)
    for i, c in enumerate(customers):
        session.refresh(c)
        assert customer_address(session, fresh, c) == f"Person.{i}@example.org"
    assert customer_address(session, fresh, _add_more) == "mid@example.net"

    dry = retire_keys(session, vault, dry_run=True)
    assert len(dry.deleted_deks) == 2 and set(dry.deleted_keks) == set(vault.kek_ids()) - {
        second.new_kek_id
    }
    report = retire_keys(session, vault)
    assert report.deleted_deks == dry.deleted_deks
    assert report.kept_keks == [second.new_kek_id]
    left = [p.name for p in settings.keys_dir.iterdir() if p.name.startswith(KEK_PREFIX)]
    assert left == [f"{KEK_PREFIX}{second.new_kek_id}.key"]
    fresh = Vault.open(settings)
    for i, c in enumerate(customers):
        assert customer_address(session, fresh, c) == f"Person.{i}@example.org"
    status = key_status(session, fresh)
    assert status["current_kek"] == second.new_kek_id
    assert [d["rows"] for d in status["deks"]] == [8]  # type: ignore[index]


def test_retire_keeps_keys_still_in_use(session: Session, settings: Settings, vault: Vault) -> None:
    _add(session, vault, 2)
    session.commit()
    rotate_keys(session, vault)  # no re-encryption: old DEK still protects the rows
    report = retire_keys(session, vault)
    assert report.deleted_deks == []
    # The old KEK no longer wraps anything (the DEK was re-wrapped), so it can go.
    assert len(report.deleted_keks) == 1
    for c in session.scalars(select(Customer)):
        assert customer_address(session, Vault.open(settings), c).startswith("Person.")


def test_a_rolled_back_data_key_is_not_reused(
    engine: object, settings: Settings, vault: Vault
) -> None:
    from sqlalchemy import Engine

    assert isinstance(engine, Engine)
    with engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        nested = session.begin_nested()
        first = vault.seal(session, "x@example.com", owner="o")
        nested.rollback()
        second = vault.seal(session, "y@example.com", owner="o")
        assert session.get(VaultKey, second.dek_id) is not None
        assert first.dek_id != second.dek_id
        session.close()
        outer.rollback()


def test_a_rotation_by_another_process_is_picked_up(
    session: Session, settings: Settings, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = vault.seal(session, "x@example.com", owner="a")
    other_process = Vault.open(settings)
    report = rotate_keys(session, other_process)
    # Within the TTL the old (still valid) key keeps being used ...
    assert vault.seal(session, "y@example.com", owner="b").dek_id == first.dek_id
    # ... and after it, the new active key.
    monkeypatch.setattr("mailveil.vault.ACTIVE_DEK_TTL_SECONDS", 0.0)
    later = vault.seal(session, "z@example.com", owner="c")
    assert later.dek_id == report.new_dek_id
    assert vault.decrypt(session, later.ciphertext, later.dek_id, later.blind_index, owner="c") == (
        "z@example.com"
    )
