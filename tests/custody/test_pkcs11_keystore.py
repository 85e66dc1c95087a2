"""The address KEKs and the ledger signing key in a PKCS#11 token: SoftHSM2 from Debian,
driven through python-pkcs11 exactly as an HSM would be (issue 14, key custody)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from mailveil.config import Settings
from mailveil.contacts.customers import (
    create_customer,
    customer_address,
    find_customer_by_address,
)
from mailveil.contacts.disclosures import disclose
from mailveil.contacts.principals import create_principal
from mailveil.contacts.relationships import create_order
from mailveil.custody.binding import KeyMismatch, bind_keys, present_key_set
from mailveil.custody.keystore import Pkcs11Store
from mailveil.db.session import make_session_factory
from mailveil.keyfiles import KeyFileError
from mailveil.ledger.append import Ledger
from mailveil.ledger.models import LedgerCheckpoint
from mailveil.ledger.signing import (
    init_signing_key,
    load_public_key,
    verify_checkpoint,
)
from mailveil.ledger.verify import verify_ledger
from mailveil.policy import PolicyEngine
from mailveil.relay.dkim import init_dkim_keys
from mailveil.relay.messages import init_verp_key
from mailveil.vault import Vault, VaultKey, init_keys, retire_keys, rotate_keys

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN = "mailveil-tests"
PIN = "4321-test"
ADDRESS = "hsm.customer@example.com"


def _required() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SoftHSM2 token for the whole run (its config must be in the environment before the
    module is first loaded); each test keeps its keys under its own label prefix."""
    if shutil.which("softhsm2-util") is None or not Path(MODULE).exists():
        reason = "Debian's softhsm2 is not installed (scripts/ensure-debian.sh installs it)"
        if _required():
            pytest.fail(reason)
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    saved = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--so-pin",
            "0000",
            "--pin",
            PIN,
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield MODULE
    finally:
        if saved is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = saved


@pytest.fixture
def hsm_settings(settings: Settings, softhsm: str) -> Settings:
    return settings.with_overrides(
        key_store="pkcs11",
        pkcs11_module=softhsm,
        pkcs11_token_label=TOKEN,
        pkcs11_pin=PIN,
        pkcs11_key_prefix=f"mv-{uuid.uuid4().hex[:8]}",
    )


def _init(settings: Settings) -> None:
    init_keys(settings)
    init_signing_key(settings)
    init_dkim_keys(settings)
    init_verp_key(settings)


def test_keys_live_in_the_token_and_the_data_round_trips(
    hsm_settings: Settings, own_engine: Engine
) -> None:
    settings = hsm_settings
    _init(settings)
    names = {p.name for p in settings.keys_dir.iterdir()}
    # No KEK and no ledger private key on disk: only the public verifier key.
    assert not any(n.startswith("address-kek-") for n in names), names
    assert "ledger-ed25519.key" not in names and "ledger-ed25519.pub" in names
    store = Pkcs11Store.from_settings(settings)
    assert len(store.kek_ids()) == 1
    with pytest.raises(KeyFileError, match="cannot be exported"):
        store.ledger_key().private_bytes_raw()

    factory = make_session_factory(own_engine)
    vault = Vault.open(settings)
    ledger = Ledger.load(settings)
    with factory() as session:
        report = bind_keys(session, settings)
        assert any(k.startswith("pkcs11:") and "-kek-" in k for k in report.registered)
        assert any(k.startswith("pkcs11:") and k.endswith("-ledger") for k in report.registered)
        customer = create_customer(session, vault, external_id="c-1", email=ADDRESS, country="DE")
        seller = create_principal(session, kind="seller", external_id="s-1", display_name="S")
        create_order(session, external_id="o-1", customer_id=customer.id, seller_id=seller.id)
        result = disclose(
            session,
            settings=settings,
            policy=PolicyEngine.load(settings),
            ledger=ledger,
            customer_id=customer.id,
            principal_id=seller.id,
            purpose="order",
            ref="o-1",
            actor="test",
        )
        assert result.allowed
        cp = ledger.checkpoint_now(session)
        session.commit()
        assert cp is not None
        # Signed inside the token, verified by anyone with the published key.
        verify_checkpoint(cp.note, load_public_key(settings))

        # A fresh vault (another process) unwraps through the token.
        other = Vault.open(settings)
        assert customer_address(session, other, customer) == ADDRESS
        assert find_customer_by_address(session, other, ADDRESS) is not None

        # Rotation: a new KEK generated in the token, data keys re-wrapped, old one retired.
        old_kek = vault.current_kek_id
        rotated = rotate_keys(session, vault, reencrypt=True)
        assert rotated.new_kek_id != old_kek
        assert set(session.scalars(select(VaultKey.kek_id))) == {rotated.new_kek_id}
        retired = retire_keys(session, vault)
        assert retired.deleted_keks == [old_kek]
        assert store.kek_ids() == [rotated.new_kek_id]
        session.refresh(customer)  # re-encrypted under the new data key by a bulk update
        assert customer_address(session, Vault.open(settings), customer) == ADDRESS
        bind_keys(session, settings)  # the retired token key is marked, not missed
        session.commit()
        assert session.scalar(select(LedgerCheckpoint.tree_size)) is not None
    report_ok = verify_ledger(own_engine, settings, load_public_key(settings), split=False)
    assert report_ok.ok, report_ok.reason


def test_another_token_key_set_is_refused(hsm_settings: Settings, own_engine: Engine) -> None:
    _init(hsm_settings)
    factory = make_session_factory(own_engine)
    with factory() as session:
        bind_keys(session, hsm_settings)
        session.commit()
        # The same keys directory, but a prefix naming keys this database never saw.
        forked = hsm_settings.with_overrides(pkcs11_key_prefix=f"mv-{uuid.uuid4().hex[:8]}")
        init_keys(forked)
        init_signing_key(forked)
        assert present_key_set(forked) != present_key_set(hsm_settings)
        with pytest.raises(KeyMismatch, match="is missing"):
            bind_keys(session, forked)


def test_a_wrong_pin_is_a_clear_error(hsm_settings: Settings) -> None:
    # In its own process: a PKCS#11 login is shared by every session of one process.
    code = (
        "import sys\n"
        "from mailveil.custody.keystore import Pkcs11Store\n"
        "from mailveil.keyfiles import KeyFileError\n"
        "try:\n"
        f"    Pkcs11Store({MODULE!r}, {TOKEN!r}, 'wrong-pin', 'x')\n"
        "except KeyFileError as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 3, done.stderr
    assert "cannot be opened (PinIncorrect)" in done.stdout, done.stdout
    assert "wrong-pin" not in done.stdout


def test_the_command_line_on_an_hsm(hsm_settings: Settings, tmp_path: Path) -> None:
    """init, a checkpoint, a KEK rotation, verify: settings from MAILVEIL_* variables as an
    operator would give them."""
    from typer.testing import CliRunner

    from mailveil.cli.app import app

    env = {k: None for k in os.environ if k.startswith("MAILVEIL_")}
    env.update(
        {
            "MAILVEIL_KEY_STORE": "pkcs11",
            "MAILVEIL_PKCS11_MODULE": hsm_settings.pkcs11_module,
            "MAILVEIL_PKCS11_TOKEN_LABEL": hsm_settings.pkcs11_token_label,
            "MAILVEIL_PKCS11_PIN": hsm_settings.pkcs11_pin,
            "MAILVEIL_PKCS11_KEY_PREFIX": hsm_settings.pkcs11_key_prefix,
            "COLUMNS": "200",
        }
    )
    data = ["--data-dir", str(tmp_path / "hsm-var")]

    def ok(*args: str) -> str:
        result = CliRunner().invoke(app, [*data, *args], env=env)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.output

    ok("init")
    keys_dir = tmp_path / "hsm-var" / "keys"
    assert (
        not list(keys_dir.glob("address-kek-*")) and not (keys_dir / "ledger-ed25519.key").exists()
    )
    ok("keys", "rotate")
    ok("init")  # the new token KEK was recorded by the rotation
    assert "ledger" in ok("ledger", "key")
